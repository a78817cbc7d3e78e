#!/usr/bin/env bash
# The release build of `retinaface` with burn's CUDA backend (`--device cuda`), stripped, for a
# GPU machine: writes target/cuda/retinaface-cuda.
#
# burn's CUDA backend finds the driver and NVRTC at run time, so no GPU is needed to build it.
# Two things are needed at build time:
#  * the CUDA version, which cudarc otherwise reads from `nvcc`: CUDA_VERSION, as cudarc spells
#    it (13000 for CUDA 13.0, the default; 12080 for 12.8);
#  * the LLVM that cubecl-cuda compiles its kernels with: the build of `tracel-llvm-bundler`
#    downloads it from GitHub's release pages (tracel-ai/tracel-llvm, v23.1.0-4). On a machine
#    that cannot reach them, download the two files `linux-x64.tar.xz` and
#    `linux-x64.checksums.json` of that release elsewhere and point LLVM_BUNDLE at their folder.
#
# Usage: [LLVM_BUNDLE=DIR] [CUDA_VERSION=13000] scripts/build_cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

LLVM_RELEASE=23.1.0-4
CUDA_VERSION=${CUDA_VERSION:-13000}
if [ -n "${LLVM_BUNDLE:-}" ]; then
    # The names and the folder the bundler's build script looks in before it downloads.
    cache=$HOME/.cache/tracel
    mkdir -p "$cache"
    for f in linux-x64.tar.xz linux-x64.checksums.json; do
        [ -f "$LLVM_BUNDLE/$f" ] || { echo "LLVM_BUNDLE: $LLVM_BUNDLE/$f is missing" >&2; exit 1; }
        cp "$LLVM_BUNDLE/$f" "$cache/tracel-llvm-$LLVM_RELEASE-$f"
    done
    export TRACEL_LLVM_BUNDLER_SKIP_CHECKSUM_DOWNLOAD=1
fi

CUDARC_CUDA_VERSION=$CUDA_VERSION cargo build --release -p retinaface-cli --features cuda \
    --target-dir target/cuda
strip -o target/cuda/retinaface-cuda target/cuda/release/retinaface
ls -l target/cuda/retinaface-cuda
