#!/usr/bin/env bash
# The Python package's tests: build the wheel (maturin, release), install it in a fresh venv
# with the test dependencies (pytest, Pillow, Ray Data), run pytest against the CLI's results.
# Needs ../shared beside the checkout; the venv lives in target/python-test.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-test
rm -rf "$venv" target/wheels
python3 -m venv "$venv"
# Retries: a large wheel (Ray's is 80 MB) can be cut off mid-download; pip ≥ 25.1 resumes it.
"$venv/bin/pip" install -q --retries 10 --upgrade "pip>=25.1"
"$venv/bin/pip" install -q --retries 10 --resume-retries 10 \
  "maturin>=1.9.4,<2" pytest pytest-timeout pillow "ray[data]>=2.51" pyarrow ruff

# The reference the tests compare with: the CLI, as `cargo test --workspace` built it (a
# plain `cargo build` would compile it again without the tests' features).
[ -x target/debug/retinaface ] || cargo build -q -p retinaface-cli
export RETINAFACE_BIN="$PWD/target/debug/retinaface"

"$venv/bin/maturin" build -q -m crates/retinaface-py/Cargo.toml -o target/wheels
wheel=$(ls target/wheels/retinaface_rs-*.whl)
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"
"$venv/bin/pip" install -q "$wheel"

# A venv with the wheel alone (it brings numpy) detects at once: no model to download.
rm -rf target/python-min
python3 -m venv target/python-min
target/python-min/bin/pip install -q "$wheel"
target/python-min/bin/python - ../shared/data/photos/t1.jpg <<'PY'
import sys, importlib.metadata as md
import retinaface_rs as rf
faces = rf.detect(sys.argv[1])
assert len(faces) == 6, len(faces)
print("a venv with only", ", ".join(sorted(d.metadata["Name"] for d in md.distributions()
      if d.metadata["Name"] not in ("pip", "setuptools"))), "found", len(faces), "faces")
PY
rm -rf target/python-min

"$venv/bin/ruff" check crates/retinaface-py/python crates/retinaface-py/tests examples scripts/bench_python.py
# From the package's folder (its pytest settings); the installed wheel is what is imported.
cd crates/retinaface-py
RAY_AUTH_MODE=disabled ../../"$venv/bin/python" -m pytest -q -p no:cacheprovider tests
echo "the Python package's tests took ${SECONDS} s (wheel, venvs, pytest)"
