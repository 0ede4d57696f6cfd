#!/usr/bin/env bash
# Fetch NVIDIA's runtime compiler (NVRTC) from PyPI so that CI, which has no GPU and no CUDA
# toolkit, can compile sd-cuda's kernels (sd-cuda/tests/kernels_compile.rs).
#
# Usage (from the repository root):   eval "$(.ci/nvrtc.sh)"
#
# Prints the shell lines that put libnvrtc.so.12 on the loader path; everything else goes to
# stderr. The wheel is unpacked once into target/nvrtc/ and reused while it is there.
# The kernels include no CUDA headers, so the compiler library is all they need (no
# cuda_fp16.h, no include path).
set -euo pipefail
cd "$(dirname "$0")/.."

version=12.9.86
wheel=nvidia_cuda_nvrtc_cu12-${version}-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
sha256=210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4

cache=target/nvrtc
lib="$PWD/$cache/$version/nvidia/cuda_nvrtc/lib"

if [ ! -e "$lib/libnvrtc.so.12" ]; then
    mkdir -p "$cache"
    if [ ! -e "$cache/$wheel" ]; then
        echo "nvrtc.sh: downloading nvidia-cuda-nvrtc-cu12==$version (~90 MB)" >&2
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --dest "$cache" "nvidia-cuda-nvrtc-cu12==$version" >&2
    fi
    echo "$sha256  $cache/$wheel" | sha256sum --check --quiet >&2
    rm -rf "$cache/$version"
    unzip -q -o "$cache/$wheel" 'nvidia/cuda_nvrtc/lib/*' -d "$cache/$version" >&2
fi

echo "export LD_LIBRARY_PATH=\"$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
