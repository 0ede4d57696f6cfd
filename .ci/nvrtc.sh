#!/usr/bin/env bash
# Fetch NVIDIA's runtime compiler (NVRTC) from PyPI so that CI, which has no GPU and no CUDA
# toolkit, can compile sd-cuda's kernels (sd-cuda/tests/kernels_compile.rs).
#
# Usage (from the repository root):   eval "$(.ci/nvrtc.sh [12|13])"   (default 12)
#
# Prints the shell line that puts CUDA 12's libnvrtc.so.12 (nvidia-cuda-nvrtc-cu12) or CUDA 13's
# libnvrtc.so.13 (nvidia-cuda-nvrtc) on the loader path; everything else goes to stderr. Each
# wheel is unpacked once into target/nvrtc/ and reused while it is there. The kernels include no
# CUDA headers, so the compiler library is all they need (no cuda_fp16.h, no include path).
# sd-cuda binds one major per build: CUDA 13's NVRTC is for a build with the `cuda-13` feature.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-12}" in
    12)
        package=nvidia-cuda-nvrtc-cu12
        version=12.9.86
        wheel=nvidia_cuda_nvrtc_cu12-${version}-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
        sha256=210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4
        folder=nvidia/cuda_nvrtc/lib
        library=libnvrtc.so.12
        ;;
    13)
        package=nvidia-cuda-nvrtc
        version=13.2.86
        wheel=nvidia_cuda_nvrtc-${version}-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
        sha256=8111c5130e967b78222ea2124145f8efe9ce201b752b2579a2513100a53be1c5
        folder=nvidia/cu13/lib
        library=libnvrtc.so.13
        ;;
    *)
        echo "nvrtc.sh: CUDA major must be 12 or 13, not $1" >&2
        exit 2
        ;;
esac

cache=target/nvrtc
lib="$PWD/$cache/$version/$folder"

if [ ! -e "$lib/$library" ]; then
    mkdir -p "$cache"
    if [ ! -e "$cache/$wheel" ]; then
        echo "nvrtc.sh: downloading $package==$version (~50-90 MB)" >&2
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --dest "$cache" "$package==$version" >&2
    fi
    echo "$sha256  $cache/$wheel" | sha256sum --check --quiet >&2
    rm -rf "${cache:?}/$version"
    unzip -q -o "$cache/$wheel" "$folder/*" -d "$cache/$version" >&2
fi

echo "export LD_LIBRARY_PATH=\"$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
