#!/usr/bin/env bash
# Interleaved A/B timing of two `sd` binaries (say, before and after a refactor), one process
# per run, A and B alternating so a drift in the machine's speed hits both alike. Prints one line
# per run and a table of medians with the B/A ratio.
#
#   tools/bench_ab.sh OLD_SD NEW_SD [COMPONENTS] [PRECISIONS] [PAIRS]
#   tools/bench_ab.sh /tmp/old/target/release/sd target/release/sd unet,vae-decode f32,bf16 4
set -euo pipefail
old=$1 new=$2
components=${3:-unet,vae-decode} precisions=${4:-f32,bf16} pairs=${5:-4}
log=$(mktemp)
for component in ${components//,/ }; do
    for precision in ${precisions//,/ }; do
        for _ in $(seq "$pairs"); do
            for side in A B; do
                bin=$old
                [ "$side" = B ] && bin=$new
                seconds=$("$bin" bench --component "$component" --precision "$precision" --runs 1 --json 2>/dev/null |
                    python3 -c 'import json, sys; print(json.load(sys.stdin)["median"])')
                echo "$component $precision $side $seconds" | tee -a "$log"
            done
        done
    done
done
python3 - "$log" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    component, precision, side, seconds = line.split()
    runs.setdefault((component, precision), {}).setdefault(side, []).append(float(seconds))
print("| component | precision | A median | B median | B/A |")
print("|---|---|---|---|---|")
for (component, precision), sides in runs.items():
    a, b = statistics.median(sides["A"]), statistics.median(sides["B"])
    print(f"| {component} | {precision} | {a:.2f} s | {b:.2f} s | {b / a:.3f}× |")
PY
rm -f "$log"
