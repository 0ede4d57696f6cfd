"""A1111's SDE samplers and their Brownian-tree noise: goldens from k-diffusion and torchsde (from
PyPI, tools/requirements.txt), driven as AUTOMATIC1111 1.10 drives them.

What is A1111's here (modules/sd_samplers_kdiffusion.py, read for its rules), on top of what
fixturegen/a1111_samplers.py already takes from A1111 (model wrapper, sigma rules, guidance,
per-image generators):
- the samplers: "DPM++ SDE" = sample_dpmpp_sde (Automatic = Karras), "DPM++ 2M SDE" =
  sample_dpmpp_2m_sde (Automatic = Exponential), "DPM++ 2M SDE Heun" = sample_dpmpp_2m_sde with
  solver_type="heun" (Automatic = Exponential); eta = s_noise = 1 (A1111's defaults: opts.eta_ancestral,
  and s_noise is not passed to these functions);
- the noise: A1111's create_noise_sampler, k-diffusion's BrownianTreeNoiseSampler over
  [smallest positive sigma, largest sigma] of the whole schedule, seeded with the list of the
  batch's image seeds (one torchsde BrownianTree per image). The trees are made on the device of
  x, here the CPU, so their randn is torch's CPU generator (A1111 on a CUDA GPU would draw them
  from the CUDA generator instead).

Unit goldens for the pieces the Rust tree is built from: torchsde.BrownianTree increments
(several seeds, shapes, intervals, clamped queries), k-diffusion's noise sampler, numpy's
SeedSequence.generate_state, and Python's round(x, 6).

Writes goldens/a1111_sde.json, goldens/brownian_tree.safetensors, goldens/tiny-sd/a1111_sde.safetensors
and the PNGs goldens/tiny-sd/a1111_sde_*.png.
"""

import os
import random

import numpy as np
import torch
import torchsde
from diffusers import StableDiffusionPipeline

from .a1111_samplers import (
    EXTERNAL,
    SAMPLING,
    SCHEDULE_STEPS,
    SCHEDULE_TYPES,
    CFGDenoiser,
    ImageRng,
    TorchHijack,
    UNetAsLdm,
    ldm_alphas_cumprod,
)
from .common import load_pipeline, tensor_stats, write_json, write_tensors
from .generations import GUIDANCE_SCALE, NEGATIVE_PROMPT, PROMPT, SIZE, STEPS, save_png

# A1111 1.10's SDE samplers: name -> (k-diffusion function, default schedule type, solver_type).
SDE_SAMPLERS = {
    "DPM++ SDE": ("sample_dpmpp_sde", "Karras", None),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", "Exponential", None),
    "DPM++ 2M SDE Heun": ("sample_dpmpp_2m_sde", "Exponential", "heun"),
}

# The image runs on tiny-sd (through the CLI): (key, sampler, schedule type or None, seeds[, rng]).
TINY_SD_RUNS = [
    *[(f"{name}/automatic", name, None, [1]) for name in SDE_SAMPLERS],
    ("DPM++ SDE/Exponential", "DPM++ SDE", "Exponential", [2]),
    ("DPM++ SDE/Uniform", "DPM++ SDE", "Uniform", [3]),
    ("DPM++ 2M SDE/Karras", "DPM++ 2M SDE", "Karras", [4]),
    ("DPM++ 2M SDE Heun/Polyexponential", "DPM++ 2M SDE Heun", "Polyexponential", [4]),
    # One tree per image, seeded with that image's seed.
    ("DPM++ SDE/automatic/seeds5_6", "DPM++ SDE", None, [5, 6]),
    ("DPM++ 2M SDE/automatic/seeds7_8", "DPM++ 2M SDE", None, [7, 8]),
    # A1111's NV source: the initial noise from Philox; the trees still use the image seeds.
    ("DPM++ 2M SDE/automatic/nv", "DPM++ 2M SDE", None, [9], "nv"),
]

# torchsde.BrownianTree cases: (t0, t1, shape, entropy, queries (ta, tb)).
TREE_CASES = [
    (0.0291675, 14.614642, (4, 8, 8), 1, "schedule"),
    (0.0291675, 14.614642, (1, 4, 8, 8), 4294967295, "schedule"),
    (0.1, 10.0, (3,), 0, "schedule"),  # fewer than 16 elements: torch's double-precision randn path
    (0.03, 1.0, (2, 5, 7), (1 << 32) + 5, "schedule"),  # a two-word entropy
    (0.0291675, 14.614642, (4, 8, 8), 12345, "edges"),
]
SEED_SEQUENCE_CASES = [
    (0, (), 24, 3),
    (1, (), 24, 3),
    (4294967295, (), 24, 3),
    ((1 << 32) + 5, (), 24, 3),
    (7, (0, 0), 24, 4),
    (7, (5, 3), 24, 4),
    (7, (123456789, 27), 24, 4),
    ((1 << 40) + 3, (1, 1), 24, 4),
    (99, (), 4, 8),
    (99, (2, 1), 4, 4),
]


def schedule_queries(t0, t1, steps=10):
    """The intervals DPM++ SDE asks for on a Karras schedule over [t0, t1]: each step's
    (sigma_next, sigma) and its log-midpoint, as sorted (ta, tb)."""
    sigmas = SAMPLING.get_sigmas_karras(steps, t0, t1)[:-1].tolist()
    queries = []
    for sigma, sigma_next in zip(sigmas, sigmas[1:]):
        midpoint = float(np.exp(0.5 * (np.log(sigma) + np.log(sigma_next))))
        queries += [(midpoint, sigma), (sigma_next, sigma)]
    return queries


def edge_queries(t0, t1):
    """Whole interval, clamped ends, a query spanning many nodes, a repeat, an empty one."""
    middle = 0.5 * (t0 + t1)
    return [(t0, t1), (t0 - 1.0, t0 + 0.5), (middle, t1 + 3.0), (0.2, 11.7), (0.2, 11.7), (3.0, 3.0), (1.0, 1.0 + 4e-6)]


def tree_goldens(tensors):
    cases = []
    for index, (t0, t1, shape, entropy, kind) in enumerate(TREE_CASES):
        tree = torchsde.BrownianTree(torch.tensor(t0), torch.zeros(shape), torch.tensor(t1), entropy=entropy)
        queries = schedule_queries(t0, t1) if kind == "schedule" else edge_queries(t0, t1)
        for q, (ta, tb) in enumerate(queries):
            tensors[f"tree/{index}/{q}"] = tree(ta, tb)
        cases.append({"t0": t0, "t1": t1, "shape": list(shape), "entropy": entropy, "queries": queries})
    return cases


def noise_sampler_goldens(tensors):
    """k-diffusion's BrownianTreeNoiseSampler as A1111 makes it (a list of seeds), asked for the
    (sigma, sigma_next) of DPM++ 2M SDE steps on an exponential schedule."""
    sigmas = SAMPLING.get_sigmas_exponential(10, 0.0291675, 14.614642)
    x = torch.zeros(2, 4, 8, 8)
    sampler = SAMPLING.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[3, 4])
    pairs = []
    for i in range(len(sigmas) - 2):
        tensors[f"noise_sampler/{i}"] = sampler(sigmas[i], sigmas[i + 1])
        pairs.append([float(sigmas[i]), float(sigmas[i + 1])])
    return {"seeds": [3, 4], "shape": [2, 4, 8, 8], "sigma_min": float(sigmas[-2]), "sigma_max": float(sigmas[0]), "pairs": pairs}


def seed_sequence_goldens():
    out = []
    for entropy, spawn_key, pool_size, words in SEED_SEQUENCE_CASES:
        sequence = np.random.SeedSequence(entropy, spawn_key=spawn_key, pool_size=pool_size)
        state = sequence.generate_state(words)
        out.append({"entropy": entropy, "spawn_key": list(spawn_key), "pool_size": pool_size, "state": [int(w) for w in state]})
    return out


def round_goldens():
    """Python's round(x, 6) on doubles like a tree's times: random ones, ties of dyadic values."""
    rng = random.Random(16)
    values = [rng.uniform(0.0, 20.0) for _ in range(500)]
    values += [rng.uniform(0.0, 1e-3) for _ in range(200)]
    values += [k / 128 for k in range(1, 200)] + [k / 2**20 for k in range(1, 100)]
    values += [0.5 * (a + b) for a, b in zip(values[:300], values[300:600])]
    return [[x, round(x, 6)] for x in values]


def get_sigmas(model, sampler, schedule, steps, samplers=SDE_SAMPLERS):
    """A1111's get_sigmas for the samplers of `samplers` (name -> (function, default schedule type,
    solver_type[, discard the next-to-last sigma]); none of SDE_SAMPLERS discards)."""
    _, default, _, *discard = samplers[sampler]
    discard = bool(discard and discard[0])
    label = schedule or default
    sigma_min, sigma_max = model.sigmas[0].item(), model.sigmas[-1].item()
    sigmas = SCHEDULE_TYPES[label](steps + (1 if discard else 0), sigma_min, sigma_max, model)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def run(pipe, model, sampler, schedule, seeds, source="cpu", samplers=SDE_SAMPLERS):
    """One txt2img generation with a sampler of `samplers` (as get_sigmas takes them); returns
    (final latents, PIL images, sigmas)."""
    side = SIZE // pipe.vae_scale_factor
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE_PROMPT)
    batch = len(seeds)
    rng = ImageRng((4, side, side), seeds, source)
    sigmas = get_sigmas(model, sampler, schedule, STEPS, samplers)
    x = rng.next() * sigmas[0]
    function, _, solver_type, *_ = samplers[sampler]
    # A1111's create_noise_sampler: one tree per image, seeded with the image seeds.
    noise_sampler = SAMPLING.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=list(seeds))
    options = {"noise_sampler": noise_sampler}
    if solver_type is not None:
        options["solver_type"] = solver_type
    extra_args = {"cond": cond.repeat(batch, 1, 1), "uncond": uncond.repeat(batch, 1, 1), "cond_scale": GUIDANCE_SCALE}
    SAMPLING.torch = TorchHijack(rng)
    try:
        latents = getattr(SAMPLING, function)(CFGDenoiser(model), x, sigmas, extra_args=extra_args, disable=True, **options)
    finally:
        SAMPLING.torch = torch
    decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return latents, pipe.image_processor.postprocess(decoded, output_type="pil"), sigmas


def tiny_sd_goldens(fixtures_dir, out_dir, tiny_sd_runs, png_prefix, samplers):
    """Run `tiny_sd_runs` ((key, sampler, schedule type or None, seeds[, rng]) with samplers of
    `samplers`) on tiny-sd, writing their PNGs to `out_dir`; returns (tensors: final latents and
    A1111's get_sigmas of every sampler, schedule type and SCHEDULE_STEPS count, runs manifest)."""
    pipe = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, "tiny-sd"))
    model = EXTERNAL.CompVisDenoiser(UNetAsLdm(pipe.unet, ldm_alphas_cumprod(pipe.scheduler.config)), quantize=False)
    tensors, runs = {}, {}
    with torch.no_grad():
        for key, sampler, schedule, seeds, *source in tiny_sd_runs:
            source = source[0] if source else "cpu"
            latents, images, sigmas = run(pipe, model, sampler, schedule, seeds, source, samplers)
            stem = png_prefix + key.replace("/", "_").replace(" ", "_").replace("+", "p")
            pngs = [f"{stem}.png"] if len(images) == 1 else [f"{stem}_{i}.png" for i in range(len(images))]
            for image, png in zip(images, pngs):
                save_png(image, os.path.join(out_dir, png))
            tensors[f"{key}/latents"] = latents
            runs[key] = {
                "sampler": sampler,
                "schedule_type": schedule,
                "seeds": seeds,
                "rng": source,
                "sigmas": [float(s) for s in sigmas],
                "latents": tensor_stats(latents),
                "pngs": pngs,
            }
        for sampler in samplers:
            for schedule in [None, *SCHEDULE_TYPES]:
                for steps in SCHEDULE_STEPS:
                    tensors[f"schedule/{sampler}/{schedule or 'automatic'}/{steps}/sigmas"] = get_sigmas(
                        model, sampler, schedule, steps, samplers
                    )
    return tensors, runs


def write_goldens(fixtures_dir, goldens_dir):
    unit = {}
    tree_manifest = tree_goldens(unit)
    noise_manifest = noise_sampler_goldens(unit)
    write_tensors(os.path.join(goldens_dir, "brownian_tree.safetensors"), unit)

    out_dir = os.path.join(goldens_dir, "tiny-sd")
    tensors, runs = tiny_sd_goldens(fixtures_dir, out_dir, TINY_SD_RUNS, "a1111_sde_", SDE_SAMPLERS)
    write_tensors(os.path.join(out_dir, "a1111_sde.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "a1111_sde.json"),
        {
            "description": "A1111 1.10's SDE samplers (k-diffusion + torchsde, tools/requirements.txt, trees on the "
            "CPU) and the pieces of their noise; see tools/fixturegen/a1111_sde.py. Runs as in a1111_samplers.json "
            f"(txt2img {SIZE}x{SIZE}, {STEPS} steps, CFG {GUIDANCE_SCALE}, prompt {PROMPT!r}, negative prompt "
            f"{NEGATIVE_PROMPT!r}); final latents in tiny-sd/a1111_sde.safetensors ('<run>/latents'), with A1111's "
            "get_sigmas of each sampler, schedule type and step count ('schedule/<sampler>/<schedule type or "
            "automatic>/<steps>/sigmas'). brownian_tree.safetensors holds "
            "'tree/<case>/<query>' (torchsde.BrownianTree(t0, zeros(shape), t1, entropy)(ta, tb)) and "
            "'noise_sampler/<i>' (k-diffusion's BrownianTreeNoiseSampler(sigmas[i], sigmas[i+1])).",
            "runs": {"tiny-sd": runs},
            "trees": tree_manifest,
            "noise_sampler": noise_manifest,
            "seed_sequences": seed_sequence_goldens(),
            "round6": round_goldens(),
        },
    )
