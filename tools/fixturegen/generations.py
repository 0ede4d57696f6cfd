"""Whole-pipeline goldens: txt2img (PNDM and Euler a), img2img and inpainting, as a user runs them.

Each run stores the final latents (output_type="latent") and the image (output_type="pil", as PNG);
every parameter goes into goldens/generations.json next to them.
"""

import os

import numpy as np
import torch
from PIL import Image
from diffusers import (
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)

from .common import cpu_generator, load_pipeline, tensor_stats, write_json, write_tensors

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE_PROMPT = "blurry, low quality"
GUIDANCE_SCALE = 7.5
STEPS = 10
SIZE = 64
TXT2IMG_SEEDS = (0, 42)
IMG2IMG = {"seed": 7, "strength": 0.6}
INPAINT = {"seed": 11, "strength": 1.0}
SCHEDULERS = {"pndm": PNDMScheduler, "euler_ancestral": EulerAncestralDiscreteScheduler}
INIT_IMAGE = "init_image.png"
MASK_IMAGE = "mask.png"


def init_image():
    """A 64x64 RGB pattern: two gradients, a checkerboard and a disc (no randomness needed)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    r = x * 4
    g = y * 4
    b = np.where(((x // 8) + (y // 8)) % 2 == 0, 200, 40)
    disc = (x - 40) ** 2 + (y - 24) ** 2 < 12**2
    rgb = np.stack([np.where(disc, 255, r), np.where(disc, 230, g), np.where(disc, 0, b)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def mask_image():
    """White (repaint) rectangle on black (keep), as a greyscale PNG."""
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[16:48, 12:40] = 255
    return Image.fromarray(mask)


def save_png(image, path):
    image.save(path, format="PNG")


def run_twice(pipe, **kwargs):
    """The final latents and the PIL image of the same call (two runs, same seed)."""
    seed = kwargs.pop("seed")
    latents = pipe(**kwargs, output_type="latent", generator=cpu_generator(seed)).images
    image = pipe(**kwargs, output_type="pil", generator=cpu_generator(seed)).images[0]
    return latents, image


def common_params():
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "guidance_scale": GUIDANCE_SCALE,
        "num_inference_steps": STEPS,
    }


def record(runs, tensors, out_dir, key, params, latents, image, extra):
    png = f"{key.replace('/', '_')}.png"
    save_png(image, os.path.join(out_dir, png))
    tensors[f"{key}/latents"] = latents
    runs[key] = {
        **extra,
        **{k: v for k, v in params.items() if k not in ("image", "mask_image")},
        "generator": f"torch.Generator('cpu').manual_seed({params['seed']})",
        "latents": tensor_stats(latents),
        "png": png,
    }


def write_pipeline_goldens(fixtures_dir, goldens_dir, name, runs):
    out_dir = os.path.join(goldens_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(fixtures_dir, name)
    tensors = {}
    base = load_pipeline(StableDiffusionPipeline, path)

    for scheduler_name, scheduler_cls in SCHEDULERS.items():
        for seed in TXT2IMG_SEEDS:
            # A fresh scheduler per run, from the pipeline's own (SD 1.5) config, as a user swaps it.
            pipe = StableDiffusionPipeline(**dict(base.components, scheduler=scheduler_cls.from_config(base.scheduler.config)))
            pipe.set_progress_bar_config(disable=True)
            params = dict(common_params(), height=SIZE, width=SIZE, seed=seed)
            latents, image = run_twice(pipe, **params)
            extra = {"pipeline": "StableDiffusionPipeline", "model": name, "scheduler": scheduler_cls.__name__}
            record(runs[name], tensors, out_dir, f"txt2img/{scheduler_name}/seed{seed}", params, latents, image, extra)

    pipe = StableDiffusionImg2ImgPipeline(**base.components)
    pipe.set_progress_bar_config(disable=True)
    params = dict(common_params(), image=init_image(), strength=IMG2IMG["strength"], seed=IMG2IMG["seed"])
    latents, image = run_twice(pipe, **params)
    extra = {"pipeline": "StableDiffusionImg2ImgPipeline", "model": name, "scheduler": "PNDMScheduler", "init_image": f"../{INIT_IMAGE}"}
    record(runs[name], tensors, out_dir, "img2img/pndm", params, latents, image, extra)

    if name == "tiny-sd":
        unet = UNet2DConditionModel.from_pretrained(os.path.join(fixtures_dir, "tiny-sd-inpaint", "unet"), dtype=torch.float32)
        pipe = StableDiffusionInpaintPipeline(**dict(base.components, unet=unet.eval()))
        pipe.set_progress_bar_config(disable=True)
        params = dict(
            common_params(), image=init_image(), mask_image=mask_image(), height=SIZE, width=SIZE,
            strength=INPAINT["strength"], seed=INPAINT["seed"],
        )
        latents, image = run_twice(pipe, **params)
        extra = {
            "pipeline": "StableDiffusionInpaintPipeline",
            "model": "tiny-sd with tiny-sd-inpaint/unet",
            "scheduler": "PNDMScheduler",
            "init_image": f"../{INIT_IMAGE}",
            "mask_image": f"../{MASK_IMAGE}",
        }
        record(runs[name], tensors, out_dir, "inpaint/pndm", params, latents, image, extra)

    write_tensors(os.path.join(out_dir, "generations.safetensors"), tensors)


def write_goldens(fixtures_dir, goldens_dir):
    os.makedirs(goldens_dir, exist_ok=True)
    save_png(init_image(), os.path.join(goldens_dir, INIT_IMAGE))
    save_png(mask_image(), os.path.join(goldens_dir, MASK_IMAGE))
    runs = {"tiny-sd": {}, "tiny-sd-alt": {}}
    for name in runs:
        write_pipeline_goldens(fixtures_dir, goldens_dir, name, runs)
    write_json(
        os.path.join(goldens_dir, "generations.json"),
        {
            "description": "Whole-pipeline runs in f32 on CPU from the committed f16 weights. For each run "
            "<model>/generations.safetensors holds '<run>/latents' (output_type='latent', the final latents "
            "before VAE decoding) and <model>/<run with _>.png the output_type='pil' image of an identical "
            "second call. safety_checker=None, feature_extractor=None, requires_safety_checker=False. "
            "Schedulers: the pipeline's PNDM (SD 1.5 config) or EulerAncestralDiscreteScheduler.from_config "
            "of it. init_image.png / mask.png: the img2img/inpainting inputs (mask white = repaint).",
            "runs": runs,
        },
    )
