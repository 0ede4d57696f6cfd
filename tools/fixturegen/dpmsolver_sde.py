"""diffusers' DPMSolverSDEScheduler (torchsde's Brownian tree for its noise): traces with the
`schedulers` step's recipe and whole tiny-sd images.

Traces: schedulers.py's write_traces (its JSON `description`), on (1, 4, 4, 4) latents, each setup
built with `DPMSolverSDEScheduler.from_config(<SD 1.5 PNDM config>, **overrides)`. The class
draws its tree's seed from torch's global generator when `noise_sampler_seed` is unset, so every
setup sets it; "dpmsolver_sde" sets it to the trace generator's seed (0), which is what sd-rs uses
when the config leaves it unset (the image's seed).

Images: StableDiffusionPipeline on tiny-sd (generations.py's settings, seed 0 on a CPU generator)
with the class from the pipeline's config and `reference_config`; `scheduler_config` is what
`sd generate --scheduler-config` is given for the same image (without `noise_sampler_seed` where
the reference seeds the tree with the image's seed, sd-rs' rule for an unset seed).

Writes goldens/dpmsolver_sde.{json,safetensors}, goldens/dpmsolver_sde_images.json,
goldens/tiny-sd/dpmsolver_sde.safetensors and goldens/tiny-sd/dpmsolver_sde_*.png.
"""

import os

from diffusers import DPMSolverSDEScheduler, StableDiffusionPipeline

from .common import load_pipeline, write_json, write_tensors
from .generations import SIZE, common_params, run_twice, save_png
from .schedulers import SEED, write_traces

LATENT_SHAPE = (1, 4, 4, 4)
SETUPS = {
    "dpmsolver_sde": (DPMSolverSDEScheduler, {"noise_sampler_seed": SEED}, {}),
    "dpmsolver_sde_seed7": (DPMSolverSDEScheduler, {"noise_sampler_seed": 7}, {}),
    "dpmsolver_sde_karras": (DPMSolverSDEScheduler, {"use_karras_sigmas": True, "noise_sampler_seed": 3}, {}),
    "dpmsolver_sde_exponential": (
        DPMSolverSDEScheduler,
        {"use_exponential_sigmas": True, "noise_sampler_seed": 4},
        {},
    ),
    "dpmsolver_sde_beta": (DPMSolverSDEScheduler, {"use_beta_sigmas": True, "noise_sampler_seed": 5}, {}),
    "dpmsolver_sde_leading": (DPMSolverSDEScheduler, {"timestep_spacing": "leading", "noise_sampler_seed": 6}, {}),
    "dpmsolver_sde_trailing_v": (
        DPMSolverSDEScheduler,
        {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "noise_sampler_seed": 8},
        {},
    ),
}
IMAGE_SEED = 0
# key -> (reference_config for diffusers, scheduler_config for sd generate)
IMAGES = {
    "default": ({"noise_sampler_seed": IMAGE_SEED}, {}),
    "karras_seed5": ({"use_karras_sigmas": True, "noise_sampler_seed": 5}, {"use_karras_sigmas": True, "noise_sampler_seed": 5}),
}


def write_goldens(fixtures_dir, goldens_dir):
    base_config, tensors, manifest = write_traces(fixtures_dir, SETUPS, LATENT_SHAPE)
    write_tensors(os.path.join(goldens_dir, "dpmsolver_sde.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "dpmsolver_sde.json"),
        {
            "description": "As schedulers.json (same recipe, fake model, seeds and key layout; traces written "
            "by fixturegen/schedulers.py's write_traces), for DPMSolverSDEScheduler (torchsde Brownian-tree "
            f"noise) with config overrides, on latents of shape {list(LATENT_SHAPE)}. Every setup sets "
            "noise_sampler_seed (unset, diffusers draws it from torch's global generator). Written by "
            "tools/fixturegen/dpmsolver_sde.py.",
            "base_config": dict(base_config),
            "schedulers": manifest,
        },
    )
    write_images(fixtures_dir, goldens_dir)


def write_images(fixtures_dir, goldens_dir):
    base = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, "tiny-sd"))
    runs, tensors = {}, {}
    for key, (reference_config, scheduler_config) in IMAGES.items():
        scheduler = DPMSolverSDEScheduler.from_config(base.scheduler.config, **reference_config)
        pipe = StableDiffusionPipeline(**dict(base.components, scheduler=scheduler))
        pipe.set_progress_bar_config(disable=True)
        params = dict(common_params(), height=SIZE, width=SIZE, seed=IMAGE_SEED)
        latents, images = run_twice(pipe, **params)
        png = f"dpmsolver_sde_{key}.png"
        save_png(images[0], os.path.join(goldens_dir, "tiny-sd", png))
        tensors[f"{key}/latents"] = latents
        runs[key] = {
            "scheduler": "DPMSolverSDEScheduler",
            "reference_config": reference_config,
            "scheduler_config": scheduler_config,
            **{k: v for k, v in params.items() if k != "seed"},
            "generator": f"torch.Generator('cpu').manual_seed({IMAGE_SEED})",
            "png": f"tiny-sd/{png}",
        }
    write_tensors(os.path.join(goldens_dir, "tiny-sd", "dpmsolver_sde.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "dpmsolver_sde_images.json"),
        {
            "description": "StableDiffusionPipeline on tiny-sd (f32, CPU, safety checker off) with "
            "DPMSolverSDEScheduler.from_config(pipeline scheduler config, **reference_config), 64x64, seed "
            f"{IMAGE_SEED} on a CPU generator: the PNG of output_type='pil' and, in tiny-sd/dpmsolver_sde.safetensors, "
            "'<key>/latents' of output_type='latent'. scheduler_config: the `sd generate --scheduler-config` "
            "overrides that give the same image (noise_sampler_seed left unset where the reference's equals the "
            "image seed). Written by tools/fixturegen/dpmsolver_sde.py.",
            "runs": runs,
        },
    )
