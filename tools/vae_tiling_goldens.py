#!/usr/bin/env python3
"""Goldens for sd-vae's tiled encode/decode and latent sampling, from the pinned reference.

Writes fixtures/goldens/<model>/vae_tiling.safetensors for tiny-sd and tiny-sd-alt, from the
committed f16 VAEs computed in f32 (as tools/fixturegen/models.py does):

- tiled_decode/latents [2, 4, h, w], tiled_decode/image = vae.decode(latents) after
  enable_tiling() with tiles of TILE_SAMPLE_SIZE pixels (so 80x56-pixel outputs cover full,
  partial and overlap-only edge tiles).
- tiled_encode/image [2, 3, 80, 56], tiled_encode/mean, tiled_encode/logvar (tiled, logvar after
  diffusers' clamp).
- sample/image [1, 3, 32, 32], sample/latents =
  vae.encode(image).latent_dist.sample(torch.Generator("cpu").manual_seed(seed)).
- metadata: tile_sample_size, tile_overlap_factor, sample_seed.

Run from the repository root: python tools/vae_tiling_goldens.py
Deterministic (one thread, fixed seeds): a rerun gives byte-identical files.
"""

import os
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)

import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

from fixturegen.common import cpu_generator, seeded_randn, write_tensors  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(TOOLS_DIR), "fixtures")
TILE_SAMPLE_SIZE = 32
IMAGE_HEIGHT, IMAGE_WIDTH = 80, 56
SEED_LATENTS = 200
SEED_IMAGE = 201
SEED_SAMPLE_IMAGE = 202
SAMPLE_SEED = 7


def set_tiling(vae, enabled):
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size = TILE_SAMPLE_SIZE
    vae.tile_latent_min_size = TILE_SAMPLE_SIZE // scale
    if enabled:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


def goldens(vae):
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = seeded_randn((2, vae.config.latent_channels, IMAGE_HEIGHT // scale, IMAGE_WIDTH // scale), SEED_LATENTS)
    image = seeded_randn((2, 3, IMAGE_HEIGHT, IMAGE_WIDTH), SEED_IMAGE).clamp(-1, 1)
    sample_image = seeded_randn((1, 3, 32, 32), SEED_SAMPLE_IMAGE).clamp(-1, 1)
    out = {"tiled_decode/latents": latents, "tiled_encode/image": image}
    with torch.no_grad():
        set_tiling(vae, True)
        out["tiled_decode/image"] = vae.decode(latents).sample
        dist = vae.encode(image).latent_dist
        out["tiled_encode/mean"] = dist.mean
        out["tiled_encode/logvar"] = dist.logvar
        set_tiling(vae, False)
        out["sample/image"] = sample_image
        dist = vae.encode(sample_image).latent_dist
        out["sample/latents"] = dist.sample(generator=cpu_generator(SAMPLE_SEED))
    return out


def main():
    for model in ("tiny-sd", "tiny-sd-alt"):
        vae = AutoencoderKL.from_pretrained(os.path.join(FIXTURES, model, "vae"), dtype=torch.float32)
        metadata = {
            "tile_sample_size": str(TILE_SAMPLE_SIZE),
            "tile_overlap_factor": str(vae.tile_overlap_factor),
            "sample_seed": str(SAMPLE_SEED),
        }
        path = os.path.join(FIXTURES, "goldens", model, "vae_tiling.safetensors")
        write_tensors(path, goldens(vae), metadata)
        print("wrote", path)


if __name__ == "__main__":
    main()
