"""Hires-fix goldens: A1111's txt2img hires fix composed from diffusers pipelines and torch, on the
tiny model, and torch's `interpolate` for each of A1111's latent upscalers.

What is composed (A1111 1.10 `StableDiffusionProcessingTxt2Img.sample_hr_pass` with a latent
upscaler, read from modules/processing.py and modules/shared_items.py):

1. `StableDiffusionPipeline(..., output_type="latent")` at the base size with CPU generator(s)
   seeded with the image seed(s): the first pass's latents (unscaled, as A1111's `samples`).
2. `torch.nn.functional.interpolate(latents, size=(h, w), mode=..., antialias=...)` to the
   upscaled latent size, then A1111's crop `[ty//2 : H-(ty+1)//2, tx//2 : W-(tx+1)//2]` when both
   resize sides are given with another aspect ratio.
3. `StableDiffusionImg2ImgPipeline(image=<those latents>)` (4 channels: diffusers skips the VAE
   encode and noises the latents directly) with `num_inference_steps = int(kept / min(strength,
   0.999))` and fresh CPU generator(s) with the same seed(s) (A1111 makes a new ImageRNG for the
   pass). A1111 runs the last `kept` steps of that schedule; diffusers runs `int(N * strength)`:
   every run here picks a strength where the two agree (asserted), so the composition is A1111's
   step rule exactly.

The scheduler is a diffusers class built from the model's config for both passes. Sizes use the
tiny VAE's factor (2) where A1111 has SD's 8.
"""

import os

import torch
import torch.nn.functional as F
from diffusers import (
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)

from .common import cpu_generator, load_pipeline, seeded_randn, tensor_stats, write_json, write_tensors

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE_PROMPT = "blurry, low quality"
GUIDANCE_SCALE = 7.5
MODEL = "tiny-sd"

# A1111's latent_upscale_modes (modules/shared_items.py): name -> (torch mode, antialias).
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}

# Resize goldens: one [2, 4, 7, 6] input, resized to each size by each mode (up, down, mixed, one
# side unchanged: torch's antialiased path then skips that side's pass).
RESIZE_SIZES = ((14, 12), (11, 9), (3, 4), (7, 10), (5, 6))

SCHEDULERS = {
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
    "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
}

# Each run: base size, steps, sampler, seeds (a list = one generator per image, as A1111 seeds a
# batch), and the hires settings as A1111's API takes them.
RUNS = {
    "euler/scale1.5/latent": dict(
        width=64, height=64, steps=6, sampler="EulerDiscreteScheduler", seed=5,
        hr_scale=1.5, hr_resize_x=0, hr_resize_y=0, hr_upscaler="Latent",
        hr_second_pass_steps=4, denoising_strength=0.5,
    ),
    "euler_a/resize96x80/bicubic_antialiased": dict(
        width=64, height=64, steps=6, sampler="EulerAncestralDiscreteScheduler", seed=8,
        hr_scale=2.0, hr_resize_x=96, hr_resize_y=80, hr_upscaler="Latent (bicubic antialiased)",
        hr_second_pass_steps=0, denoising_strength=0.75,
    ),
    "euler/scale2/nearest_exact/seeds3_4": dict(
        width=48, height=32, steps=5, sampler="EulerDiscreteScheduler", seed=[3, 4],
        hr_scale=2.0, hr_resize_x=0, hr_resize_y=0, hr_upscaler="Latent (nearest-exact)",
        hr_second_pass_steps=2, denoising_strength=0.5,
    ),
}


def generators(seed):
    if isinstance(seed, list):
        return [cpu_generator(s) for s in seed]
    return cpu_generator(seed)


def hires_sizes(width, height, run, factor):
    """A1111's hr_upscale_to_x/y and truncate_x/y (processing.py, init of the txt2img hires fix)."""
    rx, ry = run["hr_resize_x"], run["hr_resize_y"]
    truncate_x = truncate_y = 0
    if rx == 0 and ry == 0:
        to_x, to_y = int(width * run["hr_scale"]), int(height * run["hr_scale"])
    elif ry == 0:
        to_x, to_y = rx, rx * height // width
    elif rx == 0:
        to_x, to_y = ry * width // height, ry
    else:
        if width / height < rx / ry:
            to_x, to_y = rx, rx * height // width
        else:
            to_x, to_y = ry * width // height, ry
        truncate_x = (to_x - rx) // factor
        truncate_y = (to_y - ry) // factor
    return to_x, to_y, truncate_x, truncate_y


def hires_run(base, run):
    scheduler_cls = SCHEDULERS[run["sampler"]]
    batch = len(run["seed"]) if isinstance(run["seed"], list) else 1
    common = dict(
        prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, guidance_scale=GUIDANCE_SCALE,
        num_images_per_prompt=batch,
    )
    first = StableDiffusionPipeline(**dict(base.components, scheduler=scheduler_cls.from_config(base.scheduler.config)))
    first.set_progress_bar_config(disable=True)
    latents = first(
        **common, width=run["width"], height=run["height"], num_inference_steps=run["steps"],
        generator=generators(run["seed"]), output_type="latent",
    ).images

    factor = base.vae_scale_factor
    to_x, to_y, tx, ty = hires_sizes(run["width"], run["height"], run, factor)
    mode, antialias = LATENT_UPSCALE_MODES[run["hr_upscaler"]]
    upscaled = F.interpolate(latents, size=(to_y // factor, to_x // factor), mode=mode, antialias=antialias)
    upscaled = upscaled[:, :, ty // 2 : upscaled.shape[2] - (ty + 1) // 2, tx // 2 : upscaled.shape[3] - (tx + 1) // 2]

    kept = run["hr_second_pass_steps"] or run["steps"]
    strength = run["denoising_strength"]
    schedule = int(kept / min(strength, 0.999))
    assert int(schedule * strength) == kept, "pick a strength where diffusers' and A1111's step rules agree"
    second = StableDiffusionImg2ImgPipeline(**dict(base.components, scheduler=scheduler_cls.from_config(base.scheduler.config)))
    second.set_progress_bar_config(disable=True)

    def second_pass(output_type):
        return second(
            **common, image=upscaled, strength=strength, num_inference_steps=schedule,
            generator=generators(run["seed"]), output_type=output_type,
        ).images

    final = second_pass("latent")
    images = second_pass("pil")
    return latents, upscaled, final, images, schedule


def write_goldens(fixtures_dir, goldens_dir):
    out_dir = os.path.join(goldens_dir, "hires")
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}

    source = seeded_randn((2, 4, 7, 6), seed=1414)
    tensors["resize/input"] = source
    for name, (mode, antialias) in LATENT_UPSCALE_MODES.items():
        for h, w in RESIZE_SIZES:
            tensors[f"resize/{name}/{h}x{w}"] = F.interpolate(source, size=(h, w), mode=mode, antialias=antialias)

    base = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, MODEL))
    runs = {}
    for key, run in RUNS.items():
        first, upscaled, final, images, schedule = hires_run(base, run)
        stem = key.replace("/", "_")
        pngs = [f"{stem}_{i}.png" for i in range(len(images))]
        for image, png in zip(images, pngs):
            image.save(os.path.join(out_dir, png), format="PNG")
        tensors[f"{key}/first_pass"] = first
        tensors[f"{key}/upscaled"] = upscaled
        tensors[f"{key}/latents"] = final
        runs[key] = {
            **run,
            "model": MODEL,
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE_PROMPT,
            "guidance_scale": GUIDANCE_SCALE,
            "second_pass_schedule_steps": schedule,
            "latents": tensor_stats(final),
            "pngs": pngs,
        }
    write_tensors(os.path.join(out_dir, "hires.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "hires.json"),
        {
            "description": "A1111's txt2img hires fix with latent upscalers, composed from diffusers 0.42.1 "
            "and torch (see tools/fixturegen/hires.py): StableDiffusionPipeline(output_type='latent') at the "
            "base size, torch.nn.functional.interpolate to the hires latent size (+ A1111's crop), then "
            "StableDiffusionImg2ImgPipeline from those latents with num_inference_steps = "
            "int(kept / min(strength, 0.999)) and fresh CPU generators with the same seeds. "
            "hires/hires.safetensors: '<run>/first_pass', '<run>/upscaled', '<run>/latents' (final), "
            "'resize/input' and 'resize/<A1111 upscaler name>/<h>x<w>' (interpolate of the input). "
            "A seed list means one generator per image.",
            "latent_upscale_modes": {k: {"mode": m, "antialias": a} for k, (m, a) in LATENT_UPSCALE_MODES.items()},
            "resize_sizes": [list(s) for s in RESIZE_SIZES],
            "runs": runs,
        },
    )
