#!/usr/bin/env bash
# `cargo build --release --features cuda` on any x86-64 Linux machine, GPU or not, with the CUDA
# 13.0 toolkit that scripts/install-cuda.sh puts in .cuda/ (installed first when missing).
#
# What each variable is for (read from candle-kernels 0.11's build.rs, which compiles its kernels
# through cudaforge, and from cudarc 0.19's build.rs):
#   PATH            cudarc runs `nvcc --version` from PATH to choose its CUDA 13.0 bindings.
#   NVCC            cudaforge's first choice of compiler (before PATH, CUDA_HOME).
#   CUDA_ROOT       cudarc adds $CUDA_ROOT/lib and $CUDA_ROOT/lib/stubs to the link search, where
#                   install-cuda.sh put libcublas.so, libcudart.so, ... and the stub libcuda.so.
#                   cudaforge takes the include folder from nvcc's location (../include).
#   CUDA_COMPUTE_CAP
#                   the one GPU architecture the kernels are compiled for. cudaforge reads a
#                   single value ("90", "90a", "80"), not a list; without it, it asks nvidia-smi,
#                   which a CPU-only machine lacks. 90 (the default here) becomes sm_90a (H100,
#                   H200): candle's kernels are PTX for compute_90a, which the driver compiles
#                   for the card when they load and which loads on 9.0 cards only. 80 gives PTX
#                   for compute_80, which the driver compiles for any card of 8.0 or newer (A100,
#                   8.6/8.9 cards, and the H100/H200 too), at the cost of no 9.0-only instructions
#                   in candle's own kernels (cuBLAS picks its kernels from the card either way).
#                   The statically compiled MoE/GGUF kernels of candle-kernels get machine code
#                   for that one architecture only; newstag does not use them.
#   CUDAFORGE_THREADS
#                   parallel nvcc jobs (default: 2, this machine's cores).
#
# The binary needs at run time, on the GPU machine: the driver's libcuda.so.1, and
# libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libnvrtc.so.13 and libcurand.so.10 (there,
# in PyTorch's nvidia/cu13/lib: scripts/bench-gpu.sh sets LD_LIBRARY_PATH).
#
# Usage: scripts/build-cuda.sh [extra cargo arguments]
#        CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${CUDA_PREFIX:-$PWD/.cuda}"
root="$prefix/nvidia/cu13"
CUDA_PREFIX="$prefix" scripts/install-cuda.sh

export PATH="$root/bin:$PATH"
export NVCC="$root/bin/nvcc"
export CUDA_ROOT="$root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
export CARGO_INCREMENTAL=0
# Its own target folder, so the CPU build's target/release/newstag stays the CPU binary.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda}"

echo "building with nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p') for compute capability $CUDA_COMPUTE_CAP"
nice -n 10 cargo build --locked --release --features cuda "$@"

bin="$CARGO_TARGET_DIR/release/newstag"
echo "built $bin; it needs at run time:"
readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(lib\(cuda\|cudart\|cublas\|cublasLt\|nvrtc\|curand\)\.so[^]]*\)\]/  \1/p'
