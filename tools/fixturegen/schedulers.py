"""Scheduler traces: timesteps, sigmas and the sample after every step for a fake model.

Each scheduler is built the way a user swaps schedulers on SD 1.5: `Cls.from_config(pndm.config)`
with the PNDM scheduler loaded from tiny-sd/scheduler (SD 1.5's file). Keys missing from that file
(timestep_spacing, ...) then take each class's own default, as they do for users.
"""

import inspect
import os

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    UniPCMultistepScheduler,
)

from .common import cpu_generator, seeded_randn, write_json, write_tensors

# name -> (class, extra from_config kwargs, extra step kwargs)
SCHEDULERS = {
    "pndm": (PNDMScheduler, {}, {}),
    "ddim_eta0": (DDIMScheduler, {}, {"eta": 0.0}),
    "ddim_eta0.5": (DDIMScheduler, {}, {"eta": 0.5}),
    "ddpm": (DDPMScheduler, {}, {}),
    "lms": (LMSDiscreteScheduler, {}, {}),
    "euler": (EulerDiscreteScheduler, {}, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}, {}),
    "heun": (HeunDiscreteScheduler, {}, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, {}),
    "dpmpp_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}, {}),
    "unipc_bh2": (UniPCMultistepScheduler, {"solver_type": "bh2"}, {}),
    "lcm": (LCMScheduler, {}, {}),
}
STEP_COUNTS = (10, 25)
STRENGTHS = (0.3, 0.75, 1.0)
LATENT_SHAPE = (1, 4, 8, 8)
SEED = 0
# add_noise case: init latents and noise from their own seeds, timestep as img2img picks it.
ADD_NOISE = {"steps": 10, "strength": 0.75, "seed_init": 1, "seed_noise": 2}


def fake_model_output(x_in, t):
    """eps = 0.1 * x_in + cos(t / 100), with cos taken in f64 and rounded to f32."""
    angle = torch.as_tensor(t).to(torch.float64) / 100
    return 0.1 * x_in + torch.cos(angle).to(torch.float32)


def make_scheduler(base_config, setup):
    cls, overrides, _ = setup
    return cls.from_config(base_config, **overrides)


def step_kwargs(scheduler, setup, generator):
    """What StableDiffusionPipeline.prepare_extra_step_kwargs passes: eta and generator when the
    scheduler's step accepts them (eta defaults to 0.0 there)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = setup[2].get("eta", 0.0)
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def trace(base_config, setup, steps, latent_shape):
    scheduler = make_scheduler(base_config, setup)
    scheduler.set_timesteps(steps, device="cpu")
    generator = cpu_generator(SEED)
    x = torch.randn(latent_shape, generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
    kwargs = step_kwargs(scheduler, setup, generator)
    samples = [x]
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        eps = fake_model_output(x_in, t)
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
        samples.append(x)
    tensors = {
        "timesteps": scheduler.timesteps.to(torch.float32),
        "samples": torch.stack(samples),
    }
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor):
        tensors["sigmas"] = sigmas
    info = {
        "init_noise_sigma": float(scheduler.init_noise_sigma),
        "order": scheduler.order,
        "timesteps": [float(t) if t.is_floating_point() else int(t) for t in scheduler.timesteps],
        "timesteps_dtype": str(scheduler.timesteps.dtype).removeprefix("torch."),
        "step_kwargs": {k: v for k, v in kwargs.items() if k != "generator"} | (
            {"generator": "same generator, continued after x0"} if "generator" in kwargs else {}
        ),
    }
    return tensors, info


class _Img2ImgStub:
    """Just enough of a pipeline for StableDiffusionImg2ImgPipeline.get_timesteps."""

    def __init__(self, scheduler):
        self.scheduler = scheduler


def img2img_selection(base_config, setup, steps, strength):
    scheduler = make_scheduler(base_config, setup)
    scheduler.set_timesteps(steps, device="cpu")
    timesteps, num_steps = StableDiffusionImg2ImgPipeline.get_timesteps(_Img2ImgStub(scheduler), steps, strength, "cpu")
    return scheduler, timesteps, {
        "timesteps": [float(t) if t.is_floating_point() else int(t) for t in timesteps],
        "num_inference_steps": num_steps,
        "begin_index": getattr(scheduler, "begin_index", None),
    }


def write_goldens(fixtures_dir, goldens_dir):
    base_config, tensors, manifest = write_traces(fixtures_dir, SCHEDULERS, LATENT_SHAPE)
    write_tensors(os.path.join(goldens_dir, "schedulers.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "schedulers.json"),
        {
            "description": "Traces of each scheduler built with Cls.from_config(<SD 1.5 PNDM config>, **overrides). "
            "x0 = randn(1,4,8,8, generator=Generator('cpu').manual_seed(0)) * init_noise_sigma; then for each t in "
            "timesteps: x_in = scale_model_input(x, t); eps = 0.1*x_in + f32(cos(f64(t)/100)); "
            "x = step(eps, t, x, **step_kwargs).prev_sample, where step_kwargs are what "
            "StableDiffusionPipeline passes (eta; the generator that drew x0, continued, if step takes one). "
            "Tensors: <name>/<steps>/timesteps [n] (f32), <name>/<steps>/samples [n+1,1,4,8,8] (x0 first), "
            "<name>/<steps>/sigmas where the scheduler has them. img2img: StableDiffusionImg2ImgPipeline."
            "get_timesteps(steps, strength) after set_timesteps(steps), keyed '<steps>/<strength>'. add_noise/<name>: "
            "scheduler.add_noise(add_noise/original, add_noise/noise, timesteps[:1]) after that selection for "
            f"{ADD_NOISE['steps']} steps, strength {ADD_NOISE['strength']} (original: seed {ADD_NOISE['seed_init']}, "
            f"noise: seed {ADD_NOISE['seed_noise']}).",
            "base_config": dict(base_config),
            "schedulers": manifest,
        },
    )


def write_traces(fixtures_dir, setups, latent_shape):
    """Every setup's traces, img2img selections and add_noise golden: (the SD 1.5 config they were
    built from, the tensors, the per-setup manifest). `setups`: name -> (class, from_config
    overrides, step kwargs as {"eta": value} or {})."""
    base_config = PNDMScheduler.from_pretrained(os.path.join(fixtures_dir, "tiny-sd", "scheduler")).config
    tensors, manifest = {}, {}
    init = seeded_randn(latent_shape, ADD_NOISE["seed_init"])
    noise = seeded_randn(latent_shape, ADD_NOISE["seed_noise"])
    tensors["add_noise/original"] = init
    tensors["add_noise/noise"] = noise
    for name, setup in setups.items():
        entry = {"class": setup[0].__name__, "from_config_overrides": setup[1], "traces": {}}
        for steps in STEP_COUNTS:
            trace_tensors, info = trace(base_config, setup, steps, latent_shape)
            for key, value in trace_tensors.items():
                tensors[f"{name}/{steps}/{key}"] = value
            entry["traces"][str(steps)] = info
        entry["img2img"] = {
            f"{steps}/{strength}": img2img_selection(base_config, setup, steps, strength)[2]
            for steps in STEP_COUNTS
            for strength in STRENGTHS
        }
        scheduler, timesteps, _ = img2img_selection(base_config, setup, ADD_NOISE["steps"], ADD_NOISE["strength"])
        latent_timestep = timesteps[:1]
        tensors[f"add_noise/{name}"] = scheduler.add_noise(init, noise, latent_timestep)
        entry["add_noise_timestep"] = float(latent_timestep[0])
        manifest[name] = entry
    return base_config, tensors, manifest
