"""Traces of the diffusers scheduler classes added for issue 16 (DPMSolverSinglestep, KDPM2Discrete,
KDPM2AncestralDiscrete, DEISMultistep, TCD), with config overrides as `--scheduler-config` sets them.

The recipe is the `schedulers` step's (schedulers.py's `write_traces`; its JSON `description`): each class
is built with `Cls.from_config(<SD 1.5 PNDM config>, **overrides)`, x0 is seeded randn times
`init_noise_sigma`, the fake model is the same, and `step` gets what StableDiffusionPipeline passes
(eta, default 0.0, and the generator that drew x0, continued). The latents are (1, 4, 4, 4) here to
keep the file small, and the files are their own so the `schedulers` step's stay byte-identical.
"""

import os

from diffusers import (
    DEISMultistepScheduler,
    DPMSolverSinglestepScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    StableDiffusionPipeline,
    TCDScheduler,
)

from .common import load_pipeline, write_json, write_tensors
from .generations import SIZE, common_params, run_twice, save_png
from .schedulers import write_traces

# name -> (class, from_config overrides, step kwargs: eta where the setup sets one)
SETUPS = {
    "dpmsolver_singlestep": (DPMSolverSinglestepScheduler, {}, {}),
    "dpmsolver_singlestep_order3": (DPMSolverSinglestepScheduler, {"solver_order": 3}, {}),
    "dpmsolver_singlestep_order3_heun": (
        DPMSolverSinglestepScheduler,
        {"solver_order": 3, "solver_type": "heun"},
        {},
    ),
    "dpmsolver_singlestep_order1": (DPMSolverSinglestepScheduler, {"solver_order": 1}, {}),
    "dpmsolver_singlestep_sde": (DPMSolverSinglestepScheduler, {"algorithm_type": "sde-dpmsolver++"}, {}),
    "dpmsolver_singlestep_sde_heun": (
        DPMSolverSinglestepScheduler,
        {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun", "solver_order": 3},
        {},
    ),
    "dpmsolver_singlestep_karras": (DPMSolverSinglestepScheduler, {"use_karras_sigmas": True}, {}),
    "dpmsolver_singlestep_sigma_min": (
        DPMSolverSinglestepScheduler,
        {"final_sigmas_type": "sigma_min", "lower_order_final": False},
        {},
    ),
    "dpmsolver_singlestep_v": (DPMSolverSinglestepScheduler, {"prediction_type": "v_prediction"}, {}),
    "kdpm2": (KDPM2DiscreteScheduler, {}, {}),
    "kdpm2_karras": (KDPM2DiscreteScheduler, {"use_karras_sigmas": True}, {}),
    "kdpm2_trailing": (KDPM2DiscreteScheduler, {"timestep_spacing": "trailing"}, {}),
    "kdpm2_leading_v": (
        KDPM2DiscreteScheduler,
        {"timestep_spacing": "leading", "prediction_type": "v_prediction"},
        {},
    ),
    "kdpm2_ancestral": (KDPM2AncestralDiscreteScheduler, {}, {}),
    "kdpm2_ancestral_karras": (KDPM2AncestralDiscreteScheduler, {"use_karras_sigmas": True}, {}),
    "kdpm2_ancestral_trailing": (KDPM2AncestralDiscreteScheduler, {"timestep_spacing": "trailing"}, {}),
    "deis": (DEISMultistepScheduler, {}, {}),
    "deis_order3": (DEISMultistepScheduler, {"solver_order": 3}, {}),
    "deis_order3_no_lower_final": (DEISMultistepScheduler, {"solver_order": 3, "lower_order_final": False}, {}),
    "deis_karras": (DEISMultistepScheduler, {"use_karras_sigmas": True}, {}),
    "deis_leading": (DEISMultistepScheduler, {"timestep_spacing": "leading"}, {}),
    "deis_trailing_v": (
        DEISMultistepScheduler,
        {"timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        {},
    ),
    "tcd": (TCDScheduler, {}, {}),
    "tcd_eta0.3": (TCDScheduler, {}, {"eta": 0.3}),
    "tcd_eta1": (TCDScheduler, {}, {"eta": 1.0}),
    "tcd_v": (TCDScheduler, {"prediction_type": "v_prediction"}, {"eta": 0.3}),
}
LATENT_SHAPE = (1, 4, 4, 4)
# Whole tiny-sd txt2img images (generations.py's settings: 64x64, 10 steps, guidance 7.5, its
# prompts, seed 0) with each class: key -> (trace setup, eta passed to the pipeline or None).
IMAGES = {
    "dpmsolver_singlestep_sde_karras": ("dpmsolver_singlestep_sde_karras", None),
    "kdpm2": ("kdpm2", None),
    "kdpm2_ancestral": ("kdpm2_ancestral", None),
    "deis_order3_trailing": ("deis_order3_trailing", None),
    "tcd_eta0.3": ("tcd", 0.3),
}
IMAGE_ONLY_SETUPS = {
    "dpmsolver_singlestep_sde_karras": (
        DPMSolverSinglestepScheduler,
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
        {},
    ),
    "deis_order3_trailing": (DEISMultistepScheduler, {"solver_order": 3, "timestep_spacing": "trailing"}, {}),
}


def write_goldens(fixtures_dir, goldens_dir):
    base_config, tensors, manifest = write_traces(fixtures_dir, SETUPS, LATENT_SHAPE)
    write_tensors(os.path.join(goldens_dir, "scheduler_classes.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "scheduler_classes.json"),
        {
            "description": "As schedulers.json (same recipe, fake model, seeds and key layout; traces "
            "written by fixturegen/schedulers.py's write_traces), for the classes DPMSolverSinglestep, "
            "KDPM2Discrete, KDPM2AncestralDiscrete, DEISMultistep and TCD with config overrides, on "
            f"latents of shape {list(LATENT_SHAPE)}. step_kwargs: eta as StableDiffusionPipeline passes "
            "it (its default 0.0, or the setup's) and the generator that drew x0, continued, each where "
            "step takes it. Written by tools/fixturegen/scheduler_classes.py.",
            "base_config": dict(base_config),
            "schedulers": manifest,
        },
    )
    write_images(fixtures_dir, goldens_dir)


def write_images(fixtures_dir, goldens_dir):
    """tiny-sd txt2img with each class: scheduler_classes_<key>.png (+ latents)."""
    base = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, "tiny-sd"))
    runs, tensors = {}, {}
    setups = SETUPS | IMAGE_ONLY_SETUPS
    for key, (setup_name, eta) in IMAGES.items():
        cls, overrides, _ = setups[setup_name]
        scheduler = cls.from_config(base.scheduler.config, **overrides)
        pipe = StableDiffusionPipeline(**dict(base.components, scheduler=scheduler))
        pipe.set_progress_bar_config(disable=True)
        params = dict(common_params(), height=SIZE, width=SIZE, seed=0)
        if eta is not None:
            params["eta"] = eta
        latents, images = run_twice(pipe, **params)
        png = f"scheduler_classes_{key}.png"
        save_png(images[0], os.path.join(goldens_dir, "tiny-sd", png))
        tensors[f"{key}/latents"] = latents
        runs[key] = {
            "scheduler": cls.__name__,
            "scheduler_config": overrides,
            **{k: v for k, v in params.items() if k != "seed"},
            "generator": "torch.Generator('cpu').manual_seed(0)",
            "png": f"tiny-sd/{png}",
        }
    write_tensors(os.path.join(goldens_dir, "tiny-sd", "scheduler_classes.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "scheduler_classes_images.json"),
        {
            "description": "StableDiffusionPipeline on tiny-sd (f32, CPU, safety checker off) with "
            "<scheduler>.from_config(pipeline scheduler config, **scheduler_config), 64x64, seed 0 on a CPU "
            "generator, eta where given (else the pipeline's 0.0): the PNG of output_type='pil' and, in "
            "tiny-sd/scheduler_classes.safetensors, '<key>/latents' of output_type='latent'. "
            "Written by tools/fixturegen/scheduler_classes.py.",
            "runs": runs,
        },
    )
