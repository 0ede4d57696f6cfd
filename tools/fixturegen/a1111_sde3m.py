"""A1111 1.10's "DPM++ 3M SDE": goldens from k-diffusion's sample_dpmpp_3m_sde and torchsde (from
PyPI, tools/requirements.txt), driven as AUTOMATIC1111 1.10 drives it.

What is A1111's here (modules/sd_samplers_kdiffusion.py, read for its rules): its menu entry
('DPM++ 3M SDE', 'sample_dpmpp_3m_sde', ['k_dpmpp_3m_sde'], {'scheduler': 'exponential',
'discard_next_to_last_sigma': True, 'brownian_noise': True}) — Automatic = Exponential, one sigma
more and the next-to-last dropped, Brownian-tree noise from create_noise_sampler (one tree per image
seeded with the image seeds, over the whole schedule); eta = opts.eta_ancestral = 1 (passed since
the function takes eta) and s_noise = opts.s_noise = 1. Everything else (model wrapper, CFG
denoiser, per-image generators, schedule functions, the run itself) is a1111_sde.py's and
a1111_samplers.py's. A step module of its own so that the a1111_sde step's files stay as they are.

Writes goldens/a1111_sde3m.json, goldens/tiny-sd/a1111_sde3m.safetensors and the PNGs
goldens/tiny-sd/a1111_sde3m_*.png.
"""

import os

from .a1111_sde import tiny_sd_goldens
from .common import write_json, write_tensors
from .generations import GUIDANCE_SCALE, NEGATIVE_PROMPT, PROMPT, SIZE, STEPS

# name -> (k-diffusion function, default schedule type, solver_type, discard next-to-last sigma)
SAMPLERS = {"DPM++ 3M SDE": ("sample_dpmpp_3m_sde", "Exponential", None, True)}

# The image runs on tiny-sd (through the CLI): (key, sampler, schedule type or None, seeds[, rng]).
TINY_SD_RUNS = [
    ("DPM++ 3M SDE/automatic", "DPM++ 3M SDE", None, [1]),
    ("DPM++ 3M SDE/Karras", "DPM++ 3M SDE", "Karras", [2]),
    ("DPM++ 3M SDE/Uniform", "DPM++ 3M SDE", "Uniform", [3]),
    # One tree per image, seeded with that image's seed.
    ("DPM++ 3M SDE/automatic/seeds5_6", "DPM++ 3M SDE", None, [5, 6]),
    ("DPM++ 3M SDE/automatic/nv", "DPM++ 3M SDE", None, [9], "nv"),
]


def write_goldens(fixtures_dir, goldens_dir):
    out_dir = os.path.join(goldens_dir, "tiny-sd")
    tensors, runs = tiny_sd_goldens(fixtures_dir, out_dir, TINY_SD_RUNS, "a1111_sde3m_", SAMPLERS)
    write_tensors(os.path.join(out_dir, "a1111_sde3m.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "a1111_sde3m.json"),
        {
            "description": "A1111 1.10's DPM++ 3M SDE (k-diffusion sample_dpmpp_3m_sde + torchsde, "
            "tools/requirements.txt, trees on the CPU); see tools/fixturegen/a1111_sde3m.py. Runs as in "
            f"a1111_sde.json (txt2img {SIZE}x{SIZE}, {STEPS} steps, CFG {GUIDANCE_SCALE}, prompt {PROMPT!r}, "
            f"negative prompt {NEGATIVE_PROMPT!r}); final latents in tiny-sd/a1111_sde3m.safetensors "
            "('<run>/latents'), with A1111's get_sigmas for each schedule type and step count "
            "('schedule/<sampler>/<schedule type or automatic>/<steps>/sigmas').",
            "runs": {"tiny-sd": runs},
        },
    )
