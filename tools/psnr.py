#!/usr/bin/env python3
"""PSNR and largest per-byte difference between two 8-bit RGB PNGs of the same size, plus each
image's mean and standard deviation (a saturated or flat image makes a high PSNR meaningless).

    python tools/psnr.py a.png b.png

Used to state the bf16 path's image error against the f32 path on a full-size random run:

    target/release/sd bench --component txt2img --runs 1 --steps 10 --precision f32 --save-image /tmp/f32.png
    target/release/sd bench --component txt2img --runs 1 --steps 10 --precision bf16 --save-image /tmp/bf16.png
"""

import sys

import numpy as np
from PIL import Image


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in sys.argv[1:])
    if a.shape != b.shape:
        sys.exit(f"sizes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a - b) ** 2)
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    print(f"PSNR {psnr:.2f} dB, max difference {int(np.max(np.abs(a - b)))} levels, "
          f"mean/std {a.mean():.1f}/{a.std():.1f} and {b.mean():.1f}/{b.std():.1f}")


if __name__ == "__main__":
    main()
