"""A1111's "NV" random source (modules/rng_philox.py), written again in numpy from its definition,
and goldens for sd-rs' PhiloxGenerator.

The definition (A1111, which made it to reproduce torch.randn on NVIDIA GPUs): for a randn call of n
elements, element i runs Philox 4x32-10 on the counter (offset, 0, i, 0) under the key (low, high
32 bits of the seed); the first two output words give one normal by Box-Muller in float64 with the
float32 constants 2.3283064e-10 and 2.3283064e-10 * 6.2831855; offset grows by one per call.
A1111's docstring gives seed 0, shape (3, 4) as an example; this module checks itself against it.

Writes goldens/philox.safetensors ('seed<s>/call<k>/<shape>' tensors, the calls made in order on one
generator) and goldens/tiny-sd/rng_nv_pndm_seed1.png: diffusers' txt2img (PNDM, 10 steps) fed the
NV noise of seed 1 as its initial latents.
"""

import os

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from .common import load_pipeline, write_json, write_tensors
from .generations import GUIDANCE_SCALE, NEGATIVE_PROMPT, PROMPT, SIZE, STEPS, save_png

MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
INCREMENTS = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
INV_2_32 = np.float32(2.3283064e-10)
INV_2_32_TWO_PI = np.float32(2.3283064e-10 * 6.2831855)
DOCSTRING_SEED0_3x4 = [
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]
# seed -> the shapes of successive randn calls on one generator.
CASES = {
    0: [(3, 4), (3, 4), (1,), (4, 8, 8)],
    1: [(1, 4, 32, 32), (1, 4, 32, 32), (1, 4, 32, 32)],
    42: [(17,), (2, 3), (5, 7, 3)],
    123456789: [(16,), (1,)],
    2**32 + 7: [(3, 4)],
    2**63 + 12345: [(8,), (8,)],
}


def high_low(words64):
    """(high 32 bits, low 32 bits) of uint64 words."""
    return (words64 >> np.uint64(32)).astype(np.uint32), (words64 & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def philox_4x32_10(counter, key):
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(10):
        if round_index:
            k0 = k0 + INCREMENTS[0]
            k1 = k1 + INCREMENTS[1]
        hi0, lo0 = high_low(c0.astype(np.uint64) * MULTIPLIERS[0])
        hi2, lo2 = high_low(c2.astype(np.uint64) * MULTIPLIERS[1])
        c0, c1, c2, c3 = hi2 ^ c1 ^ k0, lo2, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


class NvGenerator:
    def __init__(self, seed):
        self.seed = seed
        self.offset = 0

    def randn(self, shape):
        n = int(np.prod(shape))
        counter = (
            np.full(n, self.offset, dtype=np.uint32),
            np.zeros(n, dtype=np.uint32),
            np.arange(n, dtype=np.uint32),
            np.zeros(n, dtype=np.uint32),
        )
        self.offset += 1
        key = (np.full(n, self.seed & 0xFFFFFFFF, dtype=np.uint32), np.full(n, self.seed >> 32, dtype=np.uint32))
        x, y = philox_4x32_10(counter, key)[:2]
        u = x.astype(np.float64) * np.float64(INV_2_32) + np.float64(INV_2_32 / np.float32(2))
        v = y.astype(np.float64) * np.float64(INV_2_32_TWO_PI) + np.float64(INV_2_32_TWO_PI / np.float32(2))
        return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32).reshape(shape)


def check_docstring_example():
    """The docstring's values are torch's own CUDA output (8 decimals); A1111's f64 Box-Muller
    lands within 2.1e-7 of them (measured), its f32 result a few ulps away."""
    got = NvGenerator(0).randn((3, 4))
    if not np.allclose(got, np.array(DOCSTRING_SEED0_3x4), atol=3e-7, rtol=0):
        raise AssertionError(f"NV generator disagrees with A1111's documented values:\n{got}")


def write_goldens(fixtures_dir, goldens_dir):
    with np.errstate(over="ignore"):
        check_docstring_example()
        tensors = {}
        for seed, shapes in CASES.items():
            generator = NvGenerator(seed)
            for call, shape in enumerate(shapes):
                name = "x".join(map(str, shape))
                tensors[f"seed{seed}/call{call}/{name}"] = torch.from_numpy(generator.randn(shape))
        write_tensors(os.path.join(goldens_dir, "philox.safetensors"), tensors)

        pipe = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, "tiny-sd"))
        side = SIZE // pipe.vae_scale_factor
        latents = torch.from_numpy(NvGenerator(1).randn((1, 4, side, side)))
        image = pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE_PROMPT,
            guidance_scale=GUIDANCE_SCALE,
            num_inference_steps=STEPS,
            height=SIZE,
            width=SIZE,
            latents=latents,
        ).images[0]
        save_png(image, os.path.join(goldens_dir, "tiny-sd", "rng_nv_pndm_seed1.png"))
    write_json(
        os.path.join(goldens_dir, "philox.json"),
        {
            "description": "A1111's NV source (rng_philox.py) reimplemented in numpy by "
            "tools/fixturegen/philox.py and checked against A1111's documented seed-0 values. "
            "philox.safetensors: 'seed<s>/call<k>/<shape>' = the k-th randn(shape) of one generator. "
            "tiny-sd/rng_nv_pndm_seed1.png: diffusers' StableDiffusionPipeline (its PNDM scheduler, "
            f"{STEPS} steps, CFG {GUIDANCE_SCALE}, {SIZE}x{SIZE}, the generations prompts) given "
            "latents = NV randn((1, 4, h, w)) of seed 1.",
            "cases": {str(seed): ["x".join(map(str, s)) for s in shapes] for seed, shapes in CASES.items()},
        },
    )
