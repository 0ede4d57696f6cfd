"""A1111 sampler goldens: k-diffusion (from PyPI, tools/requirements.txt) driven the way
AUTOMATIC1111 1.10 drives it, on the tiny pipelines.

What is A1111's here (modules/sd_samplers_kdiffusion.py, sd_samplers_common.py, sd_schedulers.py,
rng.py, read for their rules):
- the model wrapper: k-diffusion's CompVisDenoiser over the LDM's alphas_cumprod (f64 numpy,
  stored as f32), unquantised t(sigma);
- the sigma schedule: get_sigmas with the sampler's default schedule for "Automatic", the model's
  sigma_min/sigma_max for the schedule functions, one more step and the next-to-last sigma dropped
  for DPM2 / DPM2 a;
- x = noise * sigmas[0]; guidance on the denoised outputs (cond first, uncond last in the batch);
  A1111's to_d; eta = s_noise = 1;
- randomness: one generator per image seeded with that image's seed (randn_source "CPU", or
  "NV" for the runs marked nv, fixturegen/philox.py):
  the initial noise is its first draw and k-diffusion's randn_like draws continue from it, as
  A1111's ImageRNG.next() does through its TorchHijack.

What is the pipeline's (and so matches sd-rs' pipeline, not A1111's UI): the text conditioning
(diffusers' encode_prompt = sd-rs' --plain-prompt), the VAE decode and the image conversion, and
for the 9-channel inpainting UNet the image conditioning (mask 1 everywhere, the blank image's
latents sampled from the image's generator after the noise, diffusers' order).

Writes goldens/a1111_samplers.json, goldens/<model>/a1111_samplers.safetensors (final latents per
run, and per schedule case the sigmas and the timesteps A1111's model sees) and the PNGs.
"""

import importlib.util
import os
import sys
import types

import numpy as np
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from .common import cpu_generator, load_pipeline, tensor_stats, write_json, write_tensors
from .generations import GUIDANCE_SCALE, NEGATIVE_PROMPT, PROMPT, SIZE, STEPS, save_png
from .philox import NvGenerator


def import_k_diffusion():
    """k_diffusion.sampling and .external without the package's __init__ (it imports training
    and evaluation code whose dependencies, torchvision among them, sampling never uses)."""
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        sys.modules.setdefault(name, types.ModuleType(name))
    spec = importlib.util.find_spec("k_diffusion")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = package
    from k_diffusion import external, sampling

    # A1111's sd_schedulers.py replaces to_d with a plain division by the scalar sigma.
    sampling.to_d = lambda x, sigma, denoised: (x - denoised) / sigma
    return sampling, external


SAMPLING, EXTERNAL = import_k_diffusion()

# A1111 1.10's k-diffusion menu for SD 1.5: name -> (function, default scheduler, discard).
A1111_SAMPLERS = {
    "DPM++ 2M": ("sample_dpmpp_2m", "karras", False),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", "karras", False),
    "Euler a": ("sample_euler_ancestral", None, False),
    "Euler": ("sample_euler", None, False),
    "LMS": ("sample_lms", None, False),
    "Heun": ("sample_heun", None, False),
    "DPM2": ("sample_dpm_2", "karras", True),
    "DPM2 a": ("sample_dpm_2_ancestral", "karras", True),
}
# A1111's schedule types SD 1.5 has: label -> sigma function (n, sigma_min, sigma_max, model).
SCHEDULE_TYPES = {
    "Uniform": lambda n, lo, hi, model: model.get_sigmas(n),
    "Karras": lambda n, lo, hi, model: SAMPLING.get_sigmas_karras(n=n, sigma_min=lo, sigma_max=hi, device="cpu"),
    "Exponential": lambda n, lo, hi, model: SAMPLING.get_sigmas_exponential(n=n, sigma_min=lo, sigma_max=hi, device="cpu"),
    "Polyexponential": lambda n, lo, hi, model: SAMPLING.get_sigmas_polyexponential(
        n=n, sigma_min=lo, sigma_max=hi, device="cpu"
    ),
    "SGM Uniform": lambda n, lo, hi, model: sgm_uniform(n, lo, hi, model),
}
SCHEDULE_NAMES = {"karras": "Karras", "exponential": "Exponential"}
SCHEDULE_STEPS = (1, 2, 3, 7, 10, 25)

# The image runs on tiny-sd (through the CLI): (key, sampler, schedule type or None, seeds).
TINY_SD_RUNS = [
    *[(f"{name}/automatic", name, None, [1]) for name in A1111_SAMPLERS],
    *[(f"DPM++ 2M/{label}", "DPM++ 2M", label, [2]) for label in SCHEDULE_TYPES if label != "Karras"],
    ("Euler a/Karras", "Euler a", "Karras", [3]),
    ("Heun/Exponential", "Heun", "Exponential", [4]),
    ("DPM2 a/SGM Uniform", "DPM2 a", "SGM Uniform", [4]),
    # One generator per image: each image's ancestral noise comes from its own seed.
    ("Euler a/automatic/seeds5_6", "Euler a", None, [5, 6]),
    ("DPM++ 2S a/automatic/seeds7_8", "DPM++ 2S a", None, [7, 8]),
    # A1111's NV source: initial and ancestral noise from each image's Philox generator.
    ("Euler a/automatic/nv", "Euler a", None, [9], "nv"),
    ("DPM2 a/automatic/nv/seeds9_10", "DPM2 a", None, [9, 10], "nv"),
]
# The 9-channel inpainting UNet, txt2img (through the library: it is not a whole folder).
INPAINT_RUNS = [(f"{name}/automatic", name, None, [11]) for name in ("Euler a", "DPM++ 2M", "DPM2 a", "Heun", "LMS")]


def ldm_alphas_cumprod(config):
    """alphas_cumprod as the LDM model registers it: numpy f64, stored as an f32 tensor."""
    n = config.num_train_timesteps
    if config.beta_schedule != "scaled_linear":
        raise ValueError(f"the LDM schedule is scaled_linear; got {config.beta_schedule}")
    betas = (torch.linspace(config.beta_start**0.5, config.beta_end**0.5, n, dtype=torch.float64) ** 2).numpy()
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


class UNetAsLdm(torch.nn.Module):
    """A diffusers UNet behind the LDM interface CompVisDenoiser calls (apply_model)."""

    def __init__(self, unet, alphas_cumprod):
        super().__init__()
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod

    def apply_model(self, x, t, cond):
        if "c_concat" in cond:
            x = torch.cat([x, cond["c_concat"][0]], dim=1)
        return self.unet(x, t, encoder_hidden_states=cond["c_crossattn"][0]).sample


class CFGDenoiser:
    """A1111's CFGDenoiser for one prompt per image: the batch is [cond..., uncond...], and
    denoised = uncond + (cond - uncond) * scale."""

    def __init__(self, model):
        self.inner_model = model

    def __call__(self, x, sigma, cond, uncond, cond_scale, image_cond=None):
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        conditioning = {"c_crossattn": [torch.cat([cond, uncond])]}
        if image_cond is not None:
            conditioning["c_concat"] = [torch.cat([image_cond, image_cond])]
        x_out = self.inner_model(x_in, sigma_in, cond=conditioning)
        batch = x.shape[0]
        denoised_uncond = x_out[-batch:]
        denoised = torch.clone(denoised_uncond)
        for i in range(batch):
            denoised[i] += (x_out[i] - denoised_uncond[i]) * (1.0 * cond_scale)
        return denoised


class ImageRng:
    """A1111's ImageRNG with randn_source "CPU" or "NV": one generator per image."""

    def __init__(self, shape, seeds, source):
        self.shape = shape
        self.source = source
        if source == "nv":
            self.generators = [NvGenerator(seed) for seed in seeds]
        else:
            self.generators = [cpu_generator(seed) for seed in seeds]

    def next(self):
        if self.source == "nv":
            with np.errstate(over="ignore"):
                return torch.stack([torch.from_numpy(g.randn(self.shape)) for g in self.generators])
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


class TorchHijack:
    """What A1111 puts in place of k_diffusion.sampling.torch: randn_like draws rng.next()."""

    def __init__(self, rng):
        self.rng = rng

    def __getattr__(self, item):
        if item == "randn_like":
            return lambda x: self.rng.next()
        return getattr(torch, item)


def sgm_uniform(n, sigma_min, sigma_max, model):
    start = model.sigma_to_t(torch.tensor(sigma_max))
    end = model.sigma_to_t(torch.tensor(sigma_min))
    sigmas = [model.t_to_sigma(t) for t in torch.linspace(start, end, n + 1)[:-1]]
    return torch.FloatTensor(sigmas + [0.0])


def get_sigmas(model, sampler, schedule, steps):
    """A1111's KDiffusionSampler.get_sigmas with default options."""
    _, default, discard = A1111_SAMPLERS[sampler]
    steps += 1 if discard else 0
    label = schedule or SCHEDULE_NAMES.get(default)
    if label is None:
        sigmas = model.get_sigmas(steps)
    else:
        sigma_min, sigma_max = model.sigmas[0].item(), model.sigmas[-1].item()
        sigmas = SCHEDULE_TYPES[label](steps, sigma_min, sigma_max, model)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def run(pipe, unet, model, sampler, schedule, seeds, source="cpu"):
    """One txt2img generation; returns (final latents, PIL images, sigmas)."""
    channels = 4
    side = SIZE // pipe.vae_scale_factor
    shape = (channels, side, side)
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE_PROMPT)
    batch = len(seeds)
    cond, uncond = cond.repeat(batch, 1, 1), uncond.repeat(batch, 1, 1)
    rng = ImageRng(shape, seeds, source)
    noise = rng.next()
    image_cond = None
    if unet.config.in_channels == 9:
        # sd-rs' (diffusers') inpainting conditioning for txt2img: mask 1 everywhere and the blank
        # image's latents, sampled from the first image's generator after its noise.
        blank = torch.zeros(1, 3, SIZE, SIZE)
        posterior = pipe.vae.encode(blank).latent_dist
        masked = posterior.sample(generator=rng.generators[0]) * pipe.vae.config.scaling_factor
        image_cond = torch.cat([torch.ones(1, 1, side, side), masked], dim=1).repeat(batch, 1, 1, 1)
    sigmas = get_sigmas(model, sampler, schedule, STEPS)
    x = noise * sigmas[0]
    SAMPLING.torch = TorchHijack(rng)
    try:
        function = getattr(SAMPLING, A1111_SAMPLERS[sampler][0])
        extra_args = {"cond": cond, "uncond": uncond, "cond_scale": GUIDANCE_SCALE, "image_cond": image_cond}
        latents = function(CFGDenoiser(model), x, sigmas, extra_args=extra_args, disable=True)
    finally:
        SAMPLING.torch = torch
    decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    images = pipe.image_processor.postprocess(decoded, output_type="pil")
    return latents, images, sigmas


def write_model_goldens(fixtures_dir, goldens_dir, model_name, pipe, unet, runs, manifest):
    out_dir = os.path.join(goldens_dir, model_name)
    os.makedirs(out_dir, exist_ok=True)
    model = EXTERNAL.CompVisDenoiser(UNetAsLdm(unet, ldm_alphas_cumprod(pipe.scheduler.config)), quantize=False)
    tensors = {}
    entries = {}
    with torch.no_grad():
        for key, sampler, schedule, seeds, *source in runs:
            source = source[0] if source else "cpu"
            latents, images, sigmas = run(pipe, unet, model, sampler, schedule, seeds, source)
            stem = "a1111_" + key.replace("/", "_").replace(" ", "_").replace("+", "p")
            pngs = [f"{stem}.png"] if len(images) == 1 else [f"{stem}_{i}.png" for i in range(len(images))]
            for image, png in zip(images, pngs):
                save_png(image, os.path.join(out_dir, png))
            tensors[f"{key}/latents"] = latents
            entries[key] = {
                "sampler": sampler,
                "schedule_type": schedule,
                "seeds": seeds,
                "rng": source,
                "sigmas": [float(s) for s in sigmas],
                "latents": tensor_stats(latents),
                "pngs": pngs,
            }
        if model_name == "tiny-sd":
            for sampler in A1111_SAMPLERS:
                for schedule in [None, *SCHEDULE_TYPES]:
                    for steps in SCHEDULE_STEPS:
                        sigmas = get_sigmas(model, sampler, schedule, steps)
                        name = f"schedule/{sampler}/{schedule or 'automatic'}/{steps}"
                        tensors[f"{name}/sigmas"] = sigmas
                        tensors[f"{name}/timesteps"] = model.sigma_to_t(sigmas[:-1])
            tensors["model/sigmas"] = model.sigmas
    write_tensors(os.path.join(out_dir, "a1111_samplers.safetensors"), tensors)
    manifest[model_name] = entries


def write_goldens(fixtures_dir, goldens_dir):
    manifest = {}
    base = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, "tiny-sd"))
    write_model_goldens(fixtures_dir, goldens_dir, "tiny-sd", base, base.unet, TINY_SD_RUNS, manifest)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(fixtures_dir, "tiny-sd-inpaint", "unet"), dtype=torch.float32)
    write_model_goldens(fixtures_dir, goldens_dir, "tiny-sd-inpaint", base, unet.eval(), INPAINT_RUNS, manifest)
    write_json(
        os.path.join(goldens_dir, "a1111_samplers.json"),
        {
            "description": "k-diffusion (tools/requirements.txt) driven as AUTOMATIC1111 1.10 drives it; see "
            "tools/fixturegen/a1111_samplers.py for what is A1111's and what is the pipeline's. txt2img "
            f"{SIZE}x{SIZE}, {STEPS} steps, CFG {GUIDANCE_SCALE}, prompt {PROMPT!r}, negative prompt "
            f"{NEGATIVE_PROMPT!r} (diffusers' plain prompt encoding), f32 on CPU. tiny-sd-inpaint: tiny-sd "
            "with the 9-channel UNet of fixtures/tiny-sd-inpaint. <model>/a1111_samplers.safetensors holds "
            "'<run>/latents' (final latents before decoding); for tiny-sd also "
            "'schedule/<sampler>/<schedule type or automatic>/<steps>/sigmas' (A1111's get_sigmas) and "
            "'.../timesteps' (sigma_to_t of each but the final 0), and 'model/sigmas'.",
            "runs": manifest,
        },
    )
