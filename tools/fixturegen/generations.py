"""Whole-pipeline goldens: txt2img (PNDM, Euler a, DDIM, DPM++ 2M Karras; guidance 1.0; batches from
one generator and from a list of generators), img2img, and inpainting with the 9-channel UNet and
with an ordinary 4-channel one (masked latent blending), as a user runs them.

Each run stores the final latents (output_type="latent") and the image(s) (output_type="pil", as PNG);
every parameter goes into goldens/generations.json next to them, with `sampler`: the name the Rust
side passes to `sd_schedulers::scheduler_from_name`.
"""

import os

import numpy as np
import torch
from PIL import Image
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
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
# Inpainting with the model's own 4-channel UNet: below strength 1 the image latents are noised
# (and the masked image is encoded with a third, unused draw from the generator).
INPAINT_LEGACY = {"seed": 13, "strength": 0.75}
# name -> (diffusers class, from_config overrides, the scheduler name the Rust side looks up: the
# diffusers class name, with the overrides as request options; A1111's names mean A1111's samplers)
SCHEDULERS = {
    "pndm": (PNDMScheduler, {}, "PNDM"),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}, "EulerAncestralDiscreteScheduler"),
    "ddim": (DDIMScheduler, {}, "DDIMScheduler"),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"},
        "DPMSolverMultistepScheduler",
    ),
}
# The txt2img runs beyond the PNDM / Euler a seed grid: (key, scheduler, seed(s), overrides).
# DDIM runs without a negative prompt (the unconditional half encodes ""); guidance 1.0 skips the
# unconditional pass, so its negative prompt must not matter; batch runs draw either one
# (2,4,h,w) tensor from one generator or one (1,4,h,w) tensor from each generator of a list.
EXTRA_TXT2IMG = (
    ("txt2img/ddim/seed0", "ddim", 0, {"negative_prompt": None}),
    ("txt2img/dpmpp_2m_karras/seed0", "dpmpp_2m_karras", 0, {}),
    ("txt2img/pndm/guidance1", "pndm", 3, {"guidance_scale": 1.0}),
    ("txt2img/pndm/batch2", "pndm", 9, {"num_images_per_prompt": 2}),
    ("txt2img/euler_ancestral/generators5_6", "euler_ancestral", [5, 6], {"num_images_per_prompt": 2}),
)
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


def generator_for(seed):
    """One CPU generator for a seed, a list of them for a list of seeds (one per image)."""
    if isinstance(seed, list):
        return [cpu_generator(s) for s in seed]
    return cpu_generator(seed)


def generator_repr(seed):
    if isinstance(seed, list):
        return "[" + ", ".join(f"torch.Generator('cpu').manual_seed({s})" for s in seed) + "]"
    return f"torch.Generator('cpu').manual_seed({seed})"


def run_twice(pipe, **kwargs):
    """The final latents and the PIL images of the same call (two runs, same seed)."""
    seed = kwargs.pop("seed")
    latents = pipe(**kwargs, output_type="latent", generator=generator_for(seed)).images
    images = pipe(**kwargs, output_type="pil", generator=generator_for(seed)).images
    return latents, images


def common_params():
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "guidance_scale": GUIDANCE_SCALE,
        "num_inference_steps": STEPS,
    }


def record(runs, tensors, out_dir, key, params, latents, images, extra):
    """One run's latents, PNG(s) and parameters. A batch writes `<key>_<i>.png` and lists them."""
    stem = key.replace("/", "_")
    pngs = [f"{stem}.png"] if len(images) == 1 else [f"{stem}_{i}.png" for i in range(len(images))]
    for image, png in zip(images, pngs):
        save_png(image, os.path.join(out_dir, png))
    tensors[f"{key}/latents"] = latents
    runs[key] = {
        **extra,
        **{k: v for k, v in params.items() if k not in ("image", "mask_image")},
        "generator": generator_repr(params["seed"]),
        "latents": tensor_stats(latents),
        **({"png": pngs[0]} if len(pngs) == 1 else {"pngs": pngs}),
    }


def txt2img(base, name, scheduler_name, params):
    """A txt2img run with a fresh scheduler from the pipeline's own (SD 1.5) config, as a user swaps it."""
    scheduler_cls, overrides, sampler = SCHEDULERS[scheduler_name]
    scheduler = scheduler_cls.from_config(base.scheduler.config, **overrides)
    pipe = StableDiffusionPipeline(**dict(base.components, scheduler=scheduler))
    pipe.set_progress_bar_config(disable=True)
    latents, images = run_twice(pipe, **params)
    extra = {
        "pipeline": "StableDiffusionPipeline",
        "model": name,
        "scheduler": scheduler_cls.__name__,
        "scheduler_overrides": overrides,
        "sampler": sampler,
    }
    return latents, images, extra


def inpaint(runs, tensors, out_dir, pipe, key, model, seed, strength):
    """An inpainting run of `pipe` on init_image.png and mask.png (one image per seed of a list)."""
    pipe.set_progress_bar_config(disable=True)
    params = dict(
        common_params(), image=init_image(), mask_image=mask_image(), height=SIZE, width=SIZE,
        strength=strength, seed=seed,
    )
    if isinstance(seed, list):
        params["num_images_per_prompt"] = len(seed)
    latents, images = run_twice(pipe, **params)
    extra = {
        "pipeline": "StableDiffusionInpaintPipeline",
        "model": model,
        "scheduler": "PNDMScheduler",
        "sampler": "PNDM",
        "init_image": f"../{INIT_IMAGE}",
        "mask_image": f"../{MASK_IMAGE}",
    }
    record(runs, tensors, out_dir, key, params, latents, images, extra)


def write_pipeline_goldens(fixtures_dir, goldens_dir, name, runs):
    out_dir = os.path.join(goldens_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(fixtures_dir, name)
    tensors = {}
    base = load_pipeline(StableDiffusionPipeline, path)

    for scheduler_name in ("pndm", "euler_ancestral"):
        for seed in TXT2IMG_SEEDS:
            params = dict(common_params(), height=SIZE, width=SIZE, seed=seed)
            latents, images, extra = txt2img(base, name, scheduler_name, params)
            record(runs[name], tensors, out_dir, f"txt2img/{scheduler_name}/seed{seed}", params, latents, images, extra)

    for key, scheduler_name, seed, overrides in EXTRA_TXT2IMG:
        params = dict(common_params(), height=SIZE, width=SIZE, seed=seed, **overrides)
        latents, images, extra = txt2img(base, name, scheduler_name, params)
        record(runs[name], tensors, out_dir, key, params, latents, images, extra)

    pipe = StableDiffusionImg2ImgPipeline(**base.components)
    pipe.set_progress_bar_config(disable=True)
    params = dict(common_params(), image=init_image(), strength=IMG2IMG["strength"], seed=IMG2IMG["seed"])
    latents, images = run_twice(pipe, **params)
    extra = {
        "pipeline": "StableDiffusionImg2ImgPipeline",
        "model": name,
        "scheduler": "PNDMScheduler",
        "sampler": "PNDM",
        "init_image": f"../{INIT_IMAGE}",
    }
    record(runs[name], tensors, out_dir, "img2img/pndm", params, latents, images, extra)

    if name == "tiny-sd":
        unet = UNet2DConditionModel.from_pretrained(os.path.join(fixtures_dir, "tiny-sd-inpaint", "unet"), dtype=torch.float32)
        pipe = StableDiffusionInpaintPipeline(**dict(base.components, unet=unet.eval()))
        model = "tiny-sd with tiny-sd-inpaint/unet"
        inpaint(runs[name], tensors, out_dir, pipe, "inpaint/pndm", model, INPAINT["seed"], INPAINT["strength"])
        # A list of generators: diffusers samples the image latents (strength < 1) and the masked
        # image's latents with the first generator only.
        inpaint(runs[name], tensors, out_dir, pipe, "inpaint/pndm/generators11_12", model, [11, 12], 0.8)

    pipe = StableDiffusionInpaintPipeline(**base.components)
    model = f"{name} (its own 4-channel UNet)"
    inpaint(runs[name], tensors, out_dir, pipe, "inpaint_legacy/pndm", model, INPAINT_LEGACY["seed"], INPAINT_LEGACY["strength"])
    inpaint(runs[name], tensors, out_dir, pipe, "inpaint_legacy/pndm/generators13_14", model, [13, 14], INPAINT_LEGACY["strength"])

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
            "Schedulers: the pipeline's PNDM (SD 1.5 config) or <class>.from_config(it, **scheduler_overrides); "
            "`sampler` is the name sd_schedulers::scheduler_from_name takes for the same setup. Batch runs "
            "list their images in `pngs`; `seed` is a list when the run passed a list of generators. "
            "inpaint/pndm uses the 9-channel tiny-sd-inpaint UNet; inpaint_legacy/pndm the model's own "
            "4-channel UNet (masked latent blending). init_image.png / mask.png: the img2img/inpainting "
            "inputs (mask white = repaint).",
            "runs": runs,
        },
    )
