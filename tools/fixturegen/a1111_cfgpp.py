"""Goldens for AUTOMATIC1111 1.10's DDIM CFG++, DPM fast and DPM adaptive, and img2img with its
timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) and the DPM-Solver ones, on tiny-sd.

AUTOMATIC1111 is not pip-installable, so what these goldens need from it is transcribed below,
literally (same operations in the same order; A1111's globals replaced by the values they hold by
default), from AUTOMATIC1111/stable-diffusion-webui:
- modules/sd_samplers_timesteps_impl.py at tag v1.10.0: `ddim_cfgpp` (added in 1.10; the
  copy of this file the project could read, commit f8391b8a8ff61bf7ebcddc9b387e6c2f206ed056,
  predates it, so it is transcribed from v1.10.0's text);
- modules/sd_samplers_cfg_denoiser.py (commit 72632242f7d612c7cb1c1b0b9f86ffcbfeb4e1e8):
  the two lines of `CFGDenoiser.forward` CFG++ relies on: `last_noise_uncond` (a copy of the
  unconditional output, kept when `need_last_noise_uncond`) and the guidance scale multiplied by
  `cond_scale_miltiplier` (sic);
- modules/sd_samplers_timesteps.py (commit 1c77b18ac8971769dfc96fd79cb4e34b9a12555e):
  `CompVisSampler.sample_img2img` (t_enc, the noising to timesteps[t_enc], the run over
  timesteps[:t_enc], `is_img2img` for UniPC);
- modules/sd_samplers_kdiffusion.py (v1.10 line; read at commit
  01a40c62556b8cf3beb418e382760dd21811d3b2 and 1.10's): `KDiffusionSampler.sample` /
  `sample_img2img` for the functions taking `sigma_min`/`sigma_max`/`n` (the model's σ range and
  n = steps in txt2img; sigma_sched[0], sigma_sched[-2] and len(sigma_sched) - 1 in img2img),
  with eta = opts.eta_ancestral = 1 and the default s_noise;
- modules/sd_samplers_common.py: `setup_img2img_steps` without img2img_fix_steps
  (t_enc = int(min(denoising_strength, 0.999) * steps)).
The DDIM, PLMS and UniPC functions and the CFG-over-ε wrapper are the a1111_exact step's
transcriptions (fixturegen/a1111_exact.py); k-diffusion's `sample_dpm_fast` comes from PyPI
(tools/requirements.txt), `sample_dpm_adaptive` likewise (k-diffusion's defaults, which A1111 keeps:
it passes only eta); the per-image generators, the LDM alphas_cumprod and what is the
pipeline's are the a1111_samplers step's (fixturegen/a1111_samplers.py).

img2img: A1111 encodes the init image with the VAE and samples its latent distribution from
torch's global generator; here, as in sd-rs' pipeline (diffusers' order), the image's own
generator samples the latents first and then draws the noise, and the sampler's draws follow.

Writes goldens/a1111_cfgpp.json, goldens/tiny-sd/a1111_cfgpp.safetensors (final latents per run;
DPM fast's evaluation sigmas for several step counts) and the runs' PNGs (a1111c_*.png).
"""

import os

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from . import a1111_exact as X
from . import a1111_samplers as A
from .common import load_pipeline, tensor_stats, write_json, write_tensors
from .generations import GUIDANCE_SCALE, INIT_IMAGE, NEGATIVE_PROMPT, PROMPT, SIZE, STEPS, save_png

SAMPLING = A.SAMPLING

# ---- modules/sd_samplers_timesteps_impl.py v1.10.0 `ddim_cfgpp` (transcribed) ----------------


@torch.no_grad()
def ddim_cfgpp(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(
        torch.float64 if x.device.type != "mps" and x.device.type != "xpu" else torch.float32
    )
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * np.sqrt((1 - alphas_prev.cpu().numpy()) / (1 - alphas.cpu()) * (1 - alphas.cpu() / alphas_prev.cpu().numpy()))

    model.cond_scale_miltiplier = 1 / 12.5
    model.need_last_noise_uncond = True

    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones((x.shape[0]))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i

        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        last_noise_uncond = model.last_noise_uncond

        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x

        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * last_noise_uncond
        noise = sigma_t * SAMPLING.torch.randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise

    return x


class TimestepsCFGPP(X.TimestepsCFG):
    """a1111_exact's CFG-over-ε wrapper with the CFGDenoiser attributes CFG++ sets: the copy of
    the unconditional output and the scale multiplier (sd_samplers_cfg_denoiser.py)."""

    def __init__(self, unet, alphas_cumprod):
        super().__init__(unet, alphas_cumprod)
        self.cond_scale_miltiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None

    def __call__(self, x, timesteps, cond, uncond, cond_scale, image_cond=None):
        x_in = torch.cat([x, x])
        t_in = torch.cat([timesteps, timesteps])
        x_out = self.unet(x_in, t_in, encoder_hidden_states=torch.cat([cond, uncond])).sample
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-uncond.shape[0]:])
        batch = x.shape[0]
        denoised_uncond = x_out[-batch:]
        denoised = torch.clone(denoised_uncond)
        for i in range(batch):
            denoised[i] += (x_out[i] - denoised_uncond[i]) * (1.0 * (cond_scale * self.cond_scale_miltiplier))
        return denoised


# ---- modules/sd_samplers_common.py `setup_img2img_steps` (img2img_fix_steps off) ----------------


def setup_img2img_steps(steps, denoising_strength):
    return steps, int(min(denoising_strength, 0.999) * steps)


# ---- the runs ----------------------------------------------------------------------------------

# (key, sampler, schedule type or None, seeds, img2img strength or None): tiny-sd through the CLI.
RUNS = [
    ("DDIM CFG++", "DDIM CFG++", None, [41], None),
    ("DDIM CFG++/seeds42_43", "DDIM CFG++", None, [42, 43], None),
    ("DPM fast", "DPM fast", None, [44], None),
    ("DPM fast/Karras", "DPM fast", "Karras", [45], None),
    ("DPM fast/seeds46_47", "DPM fast", None, [46, 47], None),
    ("DDIM/img2img", "DDIM", None, [48], 0.6),
    ("DDIM CFG++/img2img", "DDIM CFG++", None, [49], 0.6),
    ("PLMS/img2img", "PLMS", None, [50], 0.6),
    ("UniPC/img2img", "UniPC", None, [51], 0.6),
    ("UniPC/img2img/strength0.35", "UniPC", None, [52], 0.35),
    ("DPM fast/img2img", "DPM fast", None, [53], 0.6),
    ("DPM adaptive", "DPM adaptive", None, [54], None),
    # The error norm spans the batch: both images share every step-size decision.
    ("DPM adaptive/seeds55_56", "DPM adaptive", None, [55, 56], None),
    ("DPM adaptive/img2img", "DPM adaptive", None, [57], 0.6),
]
TIMESTEP_SAMPLERS = {"DDIM": X.ddim, "DDIM CFG++": ddim_cfgpp, "PLMS": X.plms, "UniPC": X.unipc}
DPM_FAST_STEPS = (1, 2, 3, 4, 5, 6, 7, 9, 10, 25)


def a1111_sigmas(wrap, schedule, steps):
    """A1111's get_sigmas for DPM fast (no default schedule type, no discard)."""
    return X.get_sigmas(wrap, "DPM fast", schedule, steps)


class SigmaRecorder:
    """A stand-in model that remembers the σ it is called at (DPM fast's plan does not depend on
    the model's output)."""

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma, **kwargs):
        self.sigmas.append(float(sigma[0]))
        return x * 0.5


def dpm_fast(model, x, sigma_min, sigma_max, n, extra_args):
    """KDiffusionSampler's call of sample_dpm_fast with A1111's eta (opts.eta_ancestral = 1)."""
    return SAMPLING.sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=extra_args, disable=True, eta=1.0)


def dpm_adaptive(model, x, sigma_min, sigma_max, n, extra_args):
    """KDiffusionSampler's call of sample_dpm_adaptive (which takes no n) with A1111's eta."""
    return SAMPLING.sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=extra_args, disable=True, eta=1.0)


DPM_SOLVERS = {"DPM fast": dpm_fast, "DPM adaptive": dpm_adaptive}


def image_latents(pipe, init_image, generator):
    """The init image's latents sampled from `generator`, scaled (sd-rs' pipeline, diffusers' order)."""
    image = Image.open(init_image)
    pixels = pipe.image_processor.preprocess(image.convert("RGB"))
    posterior = pipe.vae.encode(pixels).latent_dist
    return posterior.sample(generator=generator) * pipe.vae.config.scaling_factor


def run(pipe, ldm, sampler, schedule, seeds, strength, init_image):
    side = SIZE // pipe.vae_scale_factor
    shape = (4, side, side)
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE_PROMPT)
    batch = len(seeds)
    cond, uncond = cond.repeat(batch, 1, 1), uncond.repeat(batch, 1, 1)
    rng = A.ImageRng(shape, seeds, "cpu")
    init = None
    if strength is not None:
        init = torch.cat([image_latents(pipe, init_image, g) for g in rng.generators])
    noise = rng.next()
    extra_args = {"cond": cond, "uncond": uncond, "cond_scale": GUIDANCE_SCALE}
    recorder = None
    SAMPLING.torch = A.TorchHijack(rng)
    try:
        if sampler in TIMESTEP_SAMPLERS:
            function = TIMESTEP_SAMPLERS[sampler]
            model = TimestepsCFGPP(pipe.unet, ldm.alphas_cumprod)
            timesteps = X.get_timesteps(STEPS)
            kwargs = {}
            if strength is None:
                x = noise
            else:
                # CompVisSampler.sample_img2img
                steps, t_enc = setup_img2img_steps(STEPS, strength)
                alphas_cumprod = ldm.alphas_cumprod
                sqrt_alpha_cumprod = torch.sqrt(alphas_cumprod[timesteps[t_enc]])
                sqrt_one_minus_alpha_cumprod = torch.sqrt(1 - alphas_cumprod[timesteps[t_enc]])
                x = init * sqrt_alpha_cumprod + noise * sqrt_one_minus_alpha_cumprod
                timesteps = timesteps[:t_enc]
                if sampler == "UniPC":
                    kwargs["is_img2img"] = True
            latents = function(model, x, timesteps, extra_args=extra_args, disable=True, **kwargs)
        else:
            wrap = A.EXTERNAL.CompVisDenoiser(ldm, quantize=False)
            sigmas = a1111_sigmas(wrap, schedule, STEPS)
            cfg = A.CFGDenoiser(wrap)
            recorder = []

            def recording(x, sigma, **kwargs):
                recorder.append(float(sigma[0]))
                return cfg(x, sigma, **kwargs)

            if strength is None:
                # KDiffusionSampler.sample
                x = noise * sigmas[0]
                sigma_min, sigma_max, n = wrap.sigmas[0].item(), wrap.sigmas[-1].item(), STEPS
            else:
                # KDiffusionSampler.sample_img2img
                steps, t_enc = setup_img2img_steps(STEPS, strength)
                sigma_sched = sigmas[steps - t_enc - 1:]
                x = init + noise * sigma_sched[0]
                sigma_min, sigma_max, n = sigma_sched[-2], sigma_sched[0], len(sigma_sched) - 1
            latents = DPM_SOLVERS[sampler](recording, x, sigma_min, sigma_max, n, extra_args)
    finally:
        SAMPLING.torch = torch
    decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    images = pipe.image_processor.postprocess(decoded, output_type="pil")
    return latents, images, recorder


def dpm_fast_plan(wrap, steps):
    """The σ of each model evaluation of DPM fast's txt2img run of `steps`."""
    recorder = SigmaRecorder()
    x = torch.zeros(1, 1, 2, 2)
    SAMPLING.torch = A.TorchHijack(A.ImageRng((1, 2, 2), [0], "cpu"))
    try:
        dpm_fast(recorder, x, wrap.sigmas[0].item(), wrap.sigmas[-1].item(), steps, {})
    finally:
        SAMPLING.torch = torch
    return torch.tensor(recorder.sigmas, dtype=torch.float32)


def write_goldens(fixtures_dir, goldens_dir):
    pipe = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, "tiny-sd"))
    ldm = X.UNetOnCpu(pipe.unet, A.ldm_alphas_cumprod(pipe.scheduler.config))
    out_dir = os.path.join(goldens_dir, "tiny-sd")
    tensors = {}
    entries = {}
    with torch.no_grad():
        for key, sampler, schedule, seeds, strength in RUNS:
            init_image = os.path.join(goldens_dir, INIT_IMAGE)
            latents, images, evaluation_sigmas = run(pipe, ldm, sampler, schedule, seeds, strength, init_image)
            stem = "a1111c_" + key.replace("/", "_").replace(" ", "_").replace("+", "p")
            pngs = [f"{stem}.png"] if len(images) == 1 else [f"{stem}_{i}.png" for i in range(len(images))]
            for image, png in zip(images, pngs):
                save_png(image, os.path.join(out_dir, png))
            tensors[f"{key}/latents"] = latents
            entry = {
                "sampler": sampler,
                "schedule_type": schedule,
                "seeds": seeds,
                "rng": "cpu",
                "latents": tensor_stats(latents),
                "pngs": pngs,
            }
            if strength is not None:
                entry["init_image"] = f"../{INIT_IMAGE}"
                entry["strength"] = strength
            if evaluation_sigmas is not None:
                entry["evaluation_sigmas"] = evaluation_sigmas
            entries[key] = entry
        wrap = A.EXTERNAL.CompVisDenoiser(ldm, quantize=False)
        for steps in DPM_FAST_STEPS:
            tensors[f"dpm_fast/{steps}/evaluation_sigmas"] = dpm_fast_plan(wrap, steps)
    write_tensors(os.path.join(out_dir, "a1111_cfgpp.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "a1111_cfgpp.json"),
        {
            "description": "AUTOMATIC1111 1.10's DDIM CFG++, DPM fast and DPM adaptive, and img2img with DDIM, DDIM CFG++, "
            "PLMS, UniPC, DPM fast and DPM adaptive, transcribed from A1111's sources with k-diffusion (tools/requirements.txt); see "
            "tools/fixturegen/a1111_cfgpp.py for what is transcribed from where. tiny-sd "
            f"{SIZE}x{SIZE}, {STEPS} steps, CFG {GUIDANCE_SCALE}, prompt {PROMPT!r}, negative prompt "
            f"{NEGATIVE_PROMPT!r} (diffusers' plain prompt encoding), f32 on CPU, one CPU generator per image; "
            "img2img runs from init_image.png at the run's strength (its latents sampled from the image's "
            "generator before the noise). tiny-sd/a1111_cfgpp.safetensors holds '<run>/latents' (final latents "
            "before decoding) and 'dpm_fast/<steps>/evaluation_sigmas' (the σ of each model evaluation of a "
            "txt2img run); a DPM fast or DPM adaptive run's 'evaluation_sigmas' are those of that run (for DPM "
            "adaptive, rejected attempts included).",
            "runs": {"tiny-sd": entries},
        },
    )
