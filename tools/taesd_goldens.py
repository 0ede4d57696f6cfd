#!/usr/bin/env python3
"""TAESD (diffusers' AutoencoderTiny) with random weights and its diffusers outputs.

    python tools/taesd_goldens.py tiny [--out fixtures]      # committed: tiny-taesd/ + goldens/taesd/
    python tools/taesd_goldens.py full [--out DIR]           # full size, not committed (~10 MB)

`tiny` builds an AutoencoderTiny with 8 encoder / 12 decoder channels (the block counts of
madebyollin/taesd: encoder 1,3,3,3 reduced to 1,2,2,2; decoder 2,2,2,1) and seeded random weights
(N(0, 1/fan_in) weights, N(0, 0.1²) biases), saved in f32 as a diffusers folder
(`config.json`, `diffusion_pytorch_model.safetensors`), and goldens (f32):
- `decode/latents [2, 4, 8, 12]`, `decode/image` = `taesd.decode(latents).sample` (latents in the
  UNet's scale: TAESD has no 0.18215 factor; the random latents reach past ±3, TAESD's clamp);
- `encode/image [1, 3, 64, 48]` in [-1, 1], `encode/latents` = `taesd.encode(image).latents`.

`tiny` also writes `tiny-taesd-sd/` (2 levels, to match tiny-sd's VAE factor 2; its own
decode/encode goldens are not written) and `goldens/taesd/txt2img_pndm_seed0_taesd.png`: tiny-sd's
txt2img (GENERATION below: PNDM, 10 steps, guidance 7.5, seed 0, 64²) with that TAESD as the
pipeline's VAE.

`full` does the same with diffusers' default config (TAESD for SD 1.x, 64 channels), decode
latents [1, 4, 64, 64] (a 512² image) and encode image [1, 3, 256, 256], into DIR/taesd/
(default: sd-full-size/taesd in the system temp folder, next to tools/full_size_goldens.py's).
"""

import argparse
import os
import sys
import tempfile

import torch
from diffusers import AutoencoderTiny
from safetensors.torch import save_file

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# tiny-sd's VAE has 2 levels (64² images, 32² latents); this TAESD matches it, to decode its
# generations.
TINY_FOR_TINY_SD = dict(
    encoder_block_out_channels=(8, 8),
    decoder_block_out_channels=(12, 12),
    num_encoder_blocks=(1, 2),
    num_decoder_blocks=(2, 1),
)
# The call of the generation golden, decoded by TINY_FOR_TINY_SD.
GENERATION = dict(
    prompt="a photograph of an astronaut riding a horse",
    negative_prompt="blurry, low quality",
    num_inference_steps=10,
    guidance_scale=7.5,
    height=64,
    width=64,
    seed=0,
)

TINY = dict(
    encoder_block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(12, 12, 12, 12),
    num_encoder_blocks=(1, 2, 2, 2),
    num_decoder_blocks=(2, 2, 2, 1),
)


def randomised(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def write(out_dir, config, decode_shape, encode_shape, seed):
    os.makedirs(out_dir, exist_ok=True)
    model = randomised(AutoencoderTiny(**config), seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(decode_shape, generator=gen) * 2.0
    image = torch.rand(encode_shape, generator=gen) * 2.0 - 1.0
    with torch.no_grad():
        decoded = model.decode(latents).sample
        encoded = model.encode(image).latents
    return {
        "decode/latents": latents,
        "decode/image": decoded,
        "encode/image": image,
        "encode/latents": encoded,
    }


def write_generation(fixtures):
    """tiny-sd's txt2img (PNDM, its own scheduler) with TAESD as the pipeline's VAE: diffusers
    then decodes the UNet-scale latents directly (TAESD's scaling_factor is 1)."""
    from diffusers import StableDiffusionPipeline

    taesd_dir = os.path.join(fixtures, "tiny-taesd-sd")
    write(taesd_dir, TINY_FOR_TINY_SD, (1, 4, 8, 8), (1, 3, 16, 16), 1601)
    taesd = AutoencoderTiny.from_pretrained(taesd_dir)
    pipe = StableDiffusionPipeline.from_pretrained(
        os.path.join(fixtures, "tiny-sd"), vae=taesd, dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    call = {k: v for k, v in GENERATION.items() if k != "seed"}
    image = pipe(**call, generator=torch.Generator("cpu").manual_seed(GENERATION["seed"])).images[0]
    image.save(os.path.join(fixtures, "goldens", "taesd", "txt2img_pndm_seed0_taesd.png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("tiny", "full"))
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.what == "tiny":
        fixtures = args.out or os.path.join(os.path.dirname(TOOLS_DIR), "fixtures")
        goldens = write(os.path.join(fixtures, "tiny-taesd"), TINY, (2, 4, 8, 12), (1, 3, 64, 48), 1600)
        path = os.path.join(fixtures, "goldens", "taesd", "taesd.safetensors")
        write_generation(fixtures)
    else:
        base = args.out or os.environ.get("SD_FULL_SIZE_DIR") or os.path.join(tempfile.gettempdir(), "sd-full-size")
        model_dir = os.path.join(base, "taesd")
        goldens = write(model_dir, {}, (1, 4, 64, 64), (1, 3, 256, 256), 1700)
        path = os.path.join(model_dir, "goldens.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in goldens.items()}, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
