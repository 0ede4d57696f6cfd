#!/usr/bin/env bash
# The GPU check in one call: build here (no GPU needed), run on a lent GPU machine that has no
# Rust toolchain and no network.
#
#   tools/gpu_check.sh prepare   # here: builds the binaries into target/gpu-check (git-ignored)
#   tools/gpu_check.sh run       # there, from the repository root, with target/gpu-check carried
#
# prepare builds, in release mode, stripped and packed with xz, the `sd` binary and sd-cuda's and the root's GPU
# test binaries for CUDA ${GPU_CHECK_CUDA:-13} (the `cuda-13` feature: the lent machines have CUDA
# 13; GPU_CHECK_CUDA=12 builds for CUDA 12), plus the pure-Python diffusers wheel for the PyTorch
# baseline (the machine has PyTorch, transformers and the rest, not diffusers). It prints the
# folder's size, which must stay well under the 64 MiB a call carries with the repository.
#
# run prints the GPU and where each CUDA library was found, runs the GPU-vs-CPU op property
# tests, the full-size UNet/VAE comparisons and the tiny-model generation on the GPU (each with
# REQUIRE_CUDA=1: a skip is a failure there), then `sd bench --backend cuda` (UNet step at batch
# 2, VAE decode 512², a 50-step 512² txt2img) and the same work in PyTorch fp16 on the same GPU,
# and writes $OUT/summary.md (and logs) to come back. Budget: under 8 minutes. Without a GPU it
# says so, shows what it would have run, and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=target/gpu-check
diffusers_version=$(sed -n 's/^diffusers==//p' tools/requirements.txt)

prepare() {
    local major=${GPU_CHECK_CUDA:-13}
    local features
    case "$major" in
        12) features=cuda ;;
        13) features=cuda-13 ;;
        *) echo "gpu_check: GPU_CHECK_CUDA must be 12 or 13, not $major" >&2; exit 2 ;;
    esac
    local cargo_flags=(--release --no-default-features --features "$features")
    rm -rf "$bundle"
    mkdir -p "$bundle/bin" "$bundle/wheels"

    echo "== building sd and the GPU test binaries for CUDA $major"
    cargo build "${cargo_flags[@]}" --bin sd
    cp target/release/sd "$bundle/bin/sd"
    # The test binaries cargo builds, by name (the JSON lines name each executable).
    local listing
    listing=$(mktemp)
    cargo test "${cargo_flags[@]}" --no-run --message-format=json \
        -p sd-cuda --test ops_vs_cpu --test clip_on_cuda --test full_models_on_cuda \
        --test kernels_compile --test libraries >"$listing"
    cargo test "${cargo_flags[@]}" --no-run --message-format=json \
        -p stable-diffusion --test cuda_generation >>"$listing"
    python3 - "$listing" "$bundle/bin" <<'EOF'
import json, shutil, sys
listing, dest = sys.argv[1], sys.argv[2]
for line in open(listing):
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["profile"]["test"]:
        name = message["target"]["name"]
        shutil.copy(message["executable"], f"{dest}/test-{name}")
        print(f"  test-{name}")
EOF
    rm -f "$listing"
    strip "$bundle"/bin/*
    # xz: the binaries shrink from ~36 MiB to ~8.
    tar -C "$bundle" -cJf "$bundle/bin.tar.xz" bin
    rm -rf "$bundle/bin"
    echo "cuda-$major" >"$bundle/cuda-major"

    echo "== diffusers $diffusers_version wheel (pure Python) for the PyTorch baseline"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$bundle/wheels" \
        "diffusers==$diffusers_version"

    local size_kib
    size_kib=$(du -sk "$bundle" | cut -f1)
    echo "== $bundle: $((size_kib / 1024)) MiB"
    ls -l "$bundle" "$bundle/wheels"
    if [ "$size_kib" -gt $((30 * 1024)) ]; then
        echo "gpu_check: $bundle is over 30 MiB; with the repository it would not fit a call's 64 MiB" >&2
        exit 1
    fi
}

# What run does, in order (printed without a GPU).
steps() {
    cat <<EOF
1. nvidia-smi; where libcuda, libnvrtc and libcublas are found (test-libraries)
2. GPU tests with REQUIRE_CUDA=1: test-kernels_compile, test-ops_vs_cpu (every op vs the CPU
   backend, random shapes, f32 and f16), test-clip_on_cuda, test-full_models_on_cuda (full-size
   UNet step and VAE decode vs CPU f32), test-cuda_generation (tiny txt2img vs the CPU image)
3. sd bench --backend cuda: unet (batch 2), vae-decode (512²), txt2img (50 steps, 512²)
4. tools/bench_torch.py --device cuda --dtype fp16: the same three, same GPU
5. summary.md with each result, the timings side by side and peak GPU memory
EOF
}

run() {
    local out=${OUT:-target/gpu-check-out}
    mkdir -p "$out"
    local summary="$out/summary.md"
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none). On a GPU machine this would run:" >&2
        steps >&2
        exit 1
    fi
    if [ ! -e "$bundle/bin.tar.xz" ]; then
        echo "gpu_check: $bundle/bin.tar.xz missing: run 'tools/gpu_check.sh prepare' first and carry $bundle" >&2
        exit 2
    fi
    local started=$SECONDS
    local bin=/tmp/gpu-check/bin
    rm -rf /tmp/gpu-check && mkdir -p /tmp/gpu-check
    tar -C /tmp/gpu-check -xJf "$bundle/bin.tar.xz"
    export REQUIRE_CUDA=1 REQUIRE_NVRTC=1 RUST_BACKTRACE=1 PYTHONUNBUFFERED=1
    # The test binaries were built elsewhere: point them at this checkout's fixtures.
    export SD_FIXTURES="$PWD/fixtures"
    # The NVIDIA wheels next to PyTorch hold NVRTC and cuBLAS; sd-cuda also searches them itself,
    # this names them explicitly in case python3's environment is not one it knows.
    local wheel_dirs
    wheel_dirs=$(python3 - <<'EOF' || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))})))
EOF
)
    export SD_CUDA_LIBRARY_PATH="$wheel_dirs${SD_CUDA_LIBRARY_PATH:+:$SD_CUDA_LIBRARY_PATH}"

    {
        echo "# GPU check ($(cat "$bundle/cuda-major"), $(date -u +%Y-%m-%dT%H:%MZ))"
        echo
        echo '```'
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        echo '```'
    } >"$summary"

    # Peak GPU memory across the whole run, sampled every 200 ms.
    local peak_file="$out/gpu-memory-peak"
    echo 0 >"$peak_file"
    (
        while sleep 0.2; do
            used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
            [ "${used:-0}" -gt "$(cat "$peak_file")" ] && echo "$used" >"$peak_file"
        done
    ) &
    local sampler=$!
    trap 'kill $sampler 2>/dev/null || true' EXIT

    echo "## Tests" >>"$summary"
    local failed=0
    for test in libraries kernels_compile ops_vs_cpu clip_on_cuda full_models_on_cuda cuda_generation; do
        local log="$out/test-$test.log"
        echo "== test-$test"
        if timeout 240 "$bin/test-$test" --nocapture >"$log" 2>&1; then
            echo "- test-$test: passed ($(grep -E '^test result' "$log" | tail -1))" >>"$summary"
        else
            failed=1
            echo "- test-$test: FAILED (see test-$test.log)" >>"$summary"
        fi
        tail -3 "$log"
        # The measured errors and library locations, for the record.
        grep -E 'max \|gpu|largest difference|^lib(cuda|nvrtc|cublas)' "$log" | sed 's/^/  - /' >>"$summary" || true
    done

    echo "## Timings (median of runs; same GPU, same call)" >>"$summary"
    echo '```' >>"$summary"
    local component runs
    for component in unet vae-decode txt2img; do
        runs=5
        [ "$component" = txt2img ] && runs=1
        echo "== sd bench --backend cuda --component $component"
        timeout 180 "$bin/sd" bench --backend cuda --component "$component" --runs "$runs" \
            --steps 50 --json 2>&1 | tee -a "$out/sd-bench.log" | tail -2 >>"$summary" || failed=1
    done
    if ! python3 -c "import diffusers" 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site \
            "$bundle"/wheels/*.whl && export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    for component in unet vae-decode txt2img; do
        runs=5
        [ "$component" = txt2img ] && runs=1
        echo "== PyTorch fp16 $component"
        timeout 180 python3 tools/bench_torch.py "$component" --device cuda --dtype fp16 \
            --runs "$runs" --steps 50 2>&1 | tee -a "$out/torch-bench.log" | tail -1 >>"$summary" || failed=1
    done
    echo '```' >>"$summary"
    echo "Peak GPU memory in use during the run (nvidia-smi, all processes): $(cat "$peak_file") MiB" >>"$summary"
    echo "Wall time of the check: $((SECONDS - started)) s" >>"$summary"
    cat "$summary"
    exit "$failed"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: tools/gpu_check.sh prepare|run" >&2; steps >&2; exit 2 ;;
esac
