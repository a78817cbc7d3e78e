#!/usr/bin/env bash
# Every test: the Rust workspace, then the Python package (wheel, venv, pytest, Ray).
# Reads the data in ../shared beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
scripts/test_python.sh
