#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler, headers and link-time libraries from PyPI wheels into one
# ignored folder, .cuda/ at the repository root, for `scripts/build-cuda.sh`. No GPU and no
# system CUDA are needed: this is what lets `cargo build --features cuda` compile on a CPU-only
# machine.
#
# Why 13.0 and not a newer 13.x or 12.x: the GPU machine this is built for has driver 580 (CUDA
# 13.0), nvcc 13.0 and PyTorch 2.11+cu130, whose wheels hold libcublas.so.13, libcudart.so.13,
# libnvrtc.so.13 and libcurand.so.10. candle's kernels are PTX that the driver compiles when they
# are loaded, and a driver rejects PTX from a newer nvcc than its own CUDA version
# (CUDA_ERROR_UNSUPPORTED_PTX_VERSION), so the toolkit must not be newer than 13.0; and the
# binary links against the sonames of the libraries it was built with, so 12.x would look for
# libcublas.so.12, which that machine does not have.
#
# Usage: scripts/install-cuda.sh            (idempotent: does nothing when .cuda/ is complete)
#        CUDA_PREFIX=/elsewhere scripts/install-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${CUDA_PREFIX:-$PWD/.cuda}"
root="$prefix/nvidia/cu13"
stamp="$prefix/.installed-13.0"

# One CUDA 13.0 update 2 set: the compiler (nvcc, its front-end headers and NVVM), the runtime
# headers and libcudart, NVRTC, CCCL (headers nvcc's own headers include), and the two math
# libraries candle links, cuBLAS and cuRAND.
wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
)

if [[ -f "$stamp" && -x "$root/bin/nvcc" ]]; then
    echo "CUDA 13.0 already installed in $root"
    exit 0
fi

avail_kb=$(df -Pk "$(dirname "$prefix")" | awk 'NR==2 {print $4}')
if ((avail_kb < 4 * 1024 * 1024)); then
    echo "error: less than 4 GB free under $(dirname "$prefix"); the CUDA wheels need about 2 GB" >&2
    exit 1
fi

mkdir -p "$prefix"
# --no-deps: exactly the wheels above; --no-cache-dir: no second copy of each archive in pip's
# cache. pip unpacks each wheel and keeps no archive.
if [[ ! -x "$root/bin/nvcc" ]]; then
    python3 -m pip install --quiet --no-deps --no-cache-dir --only-binary=:all: \
        --upgrade --target "$prefix" "${wheels[@]}"
fi

if [[ ! -x "$root/bin/nvcc" ]]; then
    echo "error: $root/bin/nvcc missing after installing the wheels" >&2
    exit 1
fi

# The wheels ship only versioned sonames (libcublas.so.13) and no libcuda; the linker needs the
# unversioned names, and libcuda.so at link time. The real libcuda is the driver's, on the GPU
# machine; here a stub that defines the driver API's symbols stands in for it (built from the
# names cudarc binds, below), so the executable links and records the dependency `libcuda.so.1`.
lib="$root/lib"
for name in cudart cublas cublasLt nvrtc curand; do
    real=$(find "$lib" -maxdepth 1 -name "lib$name.so.*" | sort | head -n 1)
    if [[ -z "$real" ]]; then
        echo "error: no lib$name.so.* in $lib" >&2
        exit 1
    fi
    ln -sf "$(basename "$real")" "$lib/lib$name.so"
done

# Every cu* symbol that cudarc's driver bindings name, as empty functions, in a library whose
# soname is the driver's. It is never loaded: at run time the dynamic loader finds the driver's
# own libcuda.so.1.
cudarc_sys=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 5 -path '*cudarc-0.19.*/src/driver/sys' -type d | sort | tail -n 1)
if [[ -z "$cudarc_sys" ]]; then
    echo "error: cudarc's source is not in the cargo registry; run 'cargo fetch --locked' first" >&2
    exit 1
fi
# lib/stubs is one of the folders cudarc's build script adds to the link search under $CUDA_ROOT.
stubs="$lib/stubs"
mkdir -p "$stubs"
grep -rhoE 'pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc_sys" | awk '{print $4}' | sort -u |
    sed 's/.*/void &(void) {}/' >"$stubs/libcuda_stub.c"
cc -shared -fPIC -o "$stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$stubs/libcuda_stub.c"

touch "$stamp"
du -sh "$prefix" | awk '{print "installed CUDA 13.0 (" $1 ") in '"$root"'"}'
