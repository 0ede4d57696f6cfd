#!/usr/bin/env python3
"""sd-rs against PyTorch on this machine, side by side: time and peak memory per component.

    python tools/bench_compare.py [--runs 3] [--precision f32,bf16,auto]
        [--components clip,unet,vae-decode] [--steps 2] [--size 64] [--batch N]
        [--sd target/release/sd]

For each component, in turn, and alternating the sides so both see the same machine state:
PyTorch (`tools/bench_torch.py COMPONENT`, f32) and `sd bench --component COMPONENT --json` at
each precision, every one in a fresh process (so each peak RSS belongs to that component
alone). Prints a Markdown table of our median time / PyTorch's and our peak RSS / PyTorch's,
and the CPU features each side used (ours: `sd bench`'s `cpu_features`, capped by
SD_CPU_FEATURES if set; PyTorch's: `torch.backends.cpu.get_cpu_capability()`). `--size` (latent
side) and `--batch` go to both sides, for how cost grows with the image.
Build first: `cargo build --release`. Medians of `--runs` timed runs after one warm-up each
(txt2img: `--runs` whole generations of `--steps` steps, no warm-up; ours both with resident
models, as PyTorch's pipeline, and in low-memory mode, as `sd generate` runs).
"""

import argparse
import json
import os
import subprocess
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS_DIR)
COMPONENTS = ["clip", "unet", "unet-b1", "vae-decode", "vae-encode", "txt2img"]


def run_json(cmd):
    """Run `cmd`, return the JSON object its stdout's last line holds."""
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="txt2img's inference steps")
    parser.add_argument("--precision", default="f32,bf16", help="our precisions, comma-separated")
    parser.add_argument("--components", default="clip,unet,vae-decode", help=f"from {','.join(COMPONENTS)}")
    parser.add_argument("--size", type=int, default=64, help="latent side (64 → 512² images)")
    parser.add_argument("--batch", type=int, default=None, help="images per call (unet: 2, others: 1)")
    parser.add_argument("--sd", default=os.path.join(REPO, "target", "release", "sd"))
    args = parser.parse_args()
    shape = ["--size", str(args.size)] + (["--batch", str(args.batch)] if args.batch else [])
    components = args.components.split(",")
    precisions = args.precision.split(",")
    for c in components:
        if c not in COMPONENTS:
            sys.exit(f"unknown component {c!r}; expected one of {COMPONENTS}")

    rows = []
    for component in components:
        torch = run_json([sys.executable, os.path.join(TOOLS_DIR, "bench_torch.py"), component,
                          "--runs", str(args.runs), "--steps", str(args.steps), *shape])
        print(f"pytorch f32 {component}: {torch['median']:.3f} s, {torch['peak_rss_gib']:.2f} GiB", file=sys.stderr)
        # txt2img runs both ways: resident models (as PyTorch's pipeline) and low-memory (as
        # `sd generate`, which holds the UNet and the VAE only while they run).
        modes = [[], ["--low-memory"]] if component == "txt2img" else [[]]
        for precision in precisions:
            for mode in modes:
                ours = run_json([args.sd, "bench", "--component", component, "--json", "--runs", str(args.runs),
                                 "--steps", str(args.steps), "--precision", precision, *shape, *mode])
                label = precision + (" low-memory" if mode else "")
                print(f"sd-rs {label} {component}: {ours['median']:.3f} s, {ours['peak_rss_gib']:.2f} GiB",
                      file=sys.stderr)
                rows.append((component, label, ours, torch))

    print(f"\nsd-rs vs PyTorch {rows[0][3]['threads'] if rows else '?'} threads, medians of {args.runs} runs "
          f"(PyTorch f32 in every row)")
    if rows:
        print(f"CPU features: sd-rs {rows[0][2].get('cpu_features', '?')}, "
              f"PyTorch {rows[0][3].get('cpu_capability', '?')}")
        for _, label, ours, _ in rows:
            print(f"  sd-rs {label}: backend {ours.get('backend', '?')}")
    print()
    print("| component | sd-rs precision | sd-rs time | PyTorch time | time ratio | sd-rs peak RSS | PyTorch peak RSS | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for component, precision, ours, torch in rows:
        print(f"| {component} | {precision} | {ours['median']:.3f} s | {torch['median']:.3f} s | "
              f"{ours['median'] / torch['median']:.2f}× | {ours['peak_rss_gib']:.2f} GiB | "
              f"{torch['peak_rss_gib']:.2f} GiB | {ours['peak_rss_gib'] / torch['peak_rss_gib']:.2f}× |")


if __name__ == "__main__":
    main()
