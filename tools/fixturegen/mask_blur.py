"""goldens/mask_blur/: A1111's inpainting mask blur, by OpenCV itself.

A1111 (modules/processing.py, StableDiffusionProcessingImg2Img.init) blurs the mask with

    kernel_size = 2 * int(2.5 * blur_x + 0.5) + 1
    np_mask = cv2.GaussianBlur(np_mask, (kernel_size, 1), blur_x)     # along rows
    kernel_size = 2 * int(2.5 * blur_y + 0.5) + 1
    np_mask = cv2.GaussianBlur(np_mask, (1, kernel_size), blur_y)     # along columns

each pass skipped when its blur is 0. The same two calls run here on a fixed 8-bit mask
(shapes with edges in both directions, thin lines, a corner region, and a one-pixel-wide strip
narrower than the kernels); `mask.png` is the input, `blur_X_Y.png` the result for blur_x = X,
blur_y = Y. The calls are written here, not imported from A1111 (not pip-installable).
"""

import os

import cv2
import numpy as np
from PIL import Image

# (blur_x, blur_y): A1111's default 4, unequal pairs, one axis only, and a kernel (σ = 8:
# 41 taps) wider than the mask's 37-pixel height, so the reflection repeats.
BLURS = [(4, 4), (1, 3), (8, 0), (0, 2), (8, 8)]


def a1111_blur(mask, blur_x, blur_y):
    if blur_x > 0:
        size = 2 * int(2.5 * blur_x + 0.5) + 1
        mask = cv2.GaussianBlur(mask, (size, 1), blur_x)
    if blur_y > 0:
        size = 2 * int(2.5 * blur_y + 0.5) + 1
        mask = cv2.GaussianBlur(mask, (1, size), blur_y)
    return mask


def test_mask():
    """53×37: a filled rectangle, a disc, a diagonal band, a 1-pixel line and grey levels."""
    h, w = 37, 53
    y, x = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[4:20, 3:18] = 255
    mask[(x - 35) ** 2 + (y - 12) ** 2 <= 64] = 255
    mask[np.abs((x - y) - 10) <= 2] = 200
    mask[30, :] = 255
    mask[:, 50] = 90
    return mask


def write_goldens(_fixtures_dir, goldens):
    out = os.path.join(goldens, "mask_blur")
    os.makedirs(out, exist_ok=True)
    mask = test_mask()
    Image.fromarray(mask, mode="L").save(os.path.join(out, "mask.png"))
    for blur_x, blur_y in BLURS:
        blurred = a1111_blur(mask, blur_x, blur_y)
        Image.fromarray(blurred, mode="L").save(os.path.join(out, f"blur_{blur_x}_{blur_y}.png"))
    print(f"wrote {out} (opencv {cv2.__version__})")
