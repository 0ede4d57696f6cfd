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
    TCDScheduler,
)

from .common import write_json, write_tensors
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
