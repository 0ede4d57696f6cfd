"""LoRA extraction and resizing fixtures (issue 13): what `sd lora extract` and `sd lora resize`
are checked against. Run with `make_fixtures.py --only lora_extract` after the `lora` step.

extract  fixtures/lora/tiny-sd/extract_tuned.safetensors: the weights of tiny-sd that the `peft`
         LoRA changes, after diffusers merged it into the pipeline: `load_lora_weights(peft file)`,
         `fuse_lora(lora_scale=1.0)`, `unload_lora_weights()` (the fused weights stay), in f32 from
         the committed f16 weights. Keys `<component folder>/<tensor name as the component file
         names it>`. Written over a copy of tiny-sd they make the "tuned" checkpoint; a LoRA
         extracted from it at the LoRA's rank must give lora.json's `peft` image (diffusers,
         unfused) within 1 level. `cross_check` records the fused pipeline's own latents against
         that run's (the fusion is exact up to f32 rounding).

resize   goldens/lora_resize.safetensors: kohya's resize_lora.py (sd-scripts) of tiny-sd's `locon`
         file at new_rank 2, new_conv_rank 1, computed as that script does (f32 throughout): per
         module with lora_down/lora_up, W = lora_up.flatten(1) @ lora_down.flatten(1) (no scale);
         U, S, Vh = torch.linalg.svd(W); r = the new rank (new_conv_rank for 4-D lora_down, 1x1
         convs included, else new_rank; 1 if S[0] <= 1e-6); lora_up = (U[:, :r] @ diag(S[:r]))
         reshaped [out, r(, 1, 1)], lora_down = Vh[:r] reshaped [r, in(, kh, kw)], alpha =
         scale * r with scale = alpha / old_rank (1 without alpha). Stored under the file's keys.
         Factors are unique only up to sign per direction: compare lora_up @ lora_down.
         goldens/lora_resize.json `dynamic`: the rank kohya's dynamic rules pick per module, at
         max rank 4 (index i from 0, new rank i + 1, i clamped to [0, len(S) - 1]):
           sv_ratio t:      i = #(S > S[0] / t) - 1
           sv_cumulative t: i = searchsorted(cumsum(S) / sum(S), t)          (first cum >= t)
           sv_fro t:        i = searchsorted(cumsum(S^2) / sum(S^2), t^2)
         with each module's margin: how far the deciding quantity is from the threshold (a test
         can trust a rank only where rounding cannot flip it).

clamp    goldens/lora_resize.json `clamp`: kohya's clamp of extracted factors (extract_lora_from_models
         .py): dist = cat(up.flatten(), down.flatten()); hi = torch.quantile(dist, q); both clamped
         to [-hi, hi] — on fixed random f64 factors, for several q (`cases`, `clamped` = up then down,
         row-major).
"""

import os

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from .common import load_pipeline, tensor_stats, write_json, write_tensors

MODEL = "tiny-sd"
EXTRACT_LORA = "peft"
RESIZE_LORA = "locon"
NEW_RANK, NEW_CONV_RANK = 2, 1
DYNAMIC_MAX_RANK = 4
DYNAMIC = {"sv_ratio": 4.0, "sv_cumulative": 0.8, "sv_fro": 0.9}
MIN_SV = 1e-6
CLAMP_QUANTILES = [0.99, 0.9, 0.5, 1.0]


def fused_weights(model_dir, lora_path):
    """{`unet/<name>` | `text_encoder/<name>`: fused f32 tensor} for the weights the fusion changed,
    and the fused pipeline."""
    pipe = load_pipeline(StableDiffusionPipeline, model_dir)
    before = {c: {k: v.clone() for k, v in getattr(pipe, c).state_dict().items()} for c in ("unet", "text_encoder")}
    pipe.load_lora_weights(lora_path, adapter_name="peft")
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    changed = {}
    for component, tensors in before.items():
        file_names = stored_names(model_dir, component)
        for name, value in getattr(pipe, component).state_dict().items():
            if not torch.equal(value, tensors[name]):
                changed[f"{component}/{file_names[name]}"] = value.detach().to(torch.float32).contiguous()
    return changed, pipe


def stored_names(model_dir, component):
    """state_dict name -> the name in the component's safetensors file (transformers 5's
    CLIPTextModel state dict may lack the file's `text_model.` level)."""
    folder = os.path.join(model_dir, component)
    file = next(f for f in sorted(os.listdir(folder)) if f.endswith(".safetensors"))
    names = set(load_file(os.path.join(folder, file)))
    out = {}
    for name in names:
        out[name] = name
        out[name.removeprefix("text_model.")] = name
    return out


def resized(lora_path):
    """kohya resize of every lora_down/lora_up module (see the module docstring); also returns the
    singular values per module for the dynamic rules."""
    tensors = {k: v.to(torch.float32) for k, v in load_file(lora_path).items()}
    out, spectra = {}, {}
    for key in sorted(tensors):
        if not key.endswith(".lora_down.weight"):
            continue
        module = key.removesuffix(".lora_down.weight")
        down, up = tensors[key], tensors[f"{module}.lora_up.weight"]
        old_rank = down.shape[0]
        scale = tensors[f"{module}.alpha"].item() / old_rank if f"{module}.alpha" in tensors else 1.0
        weight = up.flatten(1) @ down.flatten(1)
        U, S, Vh = torch.linalg.svd(weight)
        rank = NEW_CONV_RANK if down.dim() == 4 else NEW_RANK
        if S[0] <= MIN_SV:
            rank = 1
        new_up = U[:, :rank] @ torch.diag(S[:rank])
        new_down = Vh[:rank]
        if down.dim() == 4:
            new_up = new_up.reshape(up.shape[0], rank, 1, 1)
            new_down = new_down.reshape(rank, *down.shape[1:])
        out[f"{module}.lora_up.weight"] = new_up.contiguous()
        out[f"{module}.lora_down.weight"] = new_down.contiguous()
        out[f"{module}.alpha"] = torch.tensor(scale * rank, dtype=torch.float32)
        spectra[module] = S.to(torch.float64)
    return out, spectra


def first_reaching(weights, target):
    """searchsorted(cumsum(w) / sum(w), target), and the distance of the deciding ratio to target."""
    ratios = torch.cumsum(weights, 0) / weights.sum()
    index = int(torch.searchsorted(ratios, torch.tensor(target, dtype=ratios.dtype)))
    neighbours = ratios[max(index - 1, 0) : index + 1]
    return index, float((neighbours - target).abs().min())


def dynamic_rank(S, method, t):
    if method == "sv_ratio":
        threshold = S[0] / t
        index = int((S > threshold).sum()) - 1
        margin = float(((S - threshold).abs() / S[0]).min())
    elif method == "sv_cumulative":
        index, margin = first_reaching(S, t)
    else:
        index, margin = first_reaching(S * S, t * t)
    index = max(0, min(index, len(S) - 1))
    rank = 1 if S[0] <= MIN_SV else min(index + 1, DYNAMIC_MAX_RANK)
    return rank, margin


def clamp_cases():
    """kohya's clamp on fixed random factors (see the module docstring)."""
    generator = torch.Generator().manual_seed(13)
    up = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    down = torch.randn(3, 5, generator=generator, dtype=torch.float64) * 0.5
    cases = []
    for q in CLAMP_QUANTILES:
        hi = torch.quantile(torch.cat([up.flatten(), down.flatten()]), q)
        clamped = torch.cat([up.clamp(-hi, hi).flatten(), down.clamp(-hi, hi).flatten()])
        cases.append({"quantile": q, "limit": float(hi), "clamped": clamped.tolist()})
    return {"up": up.tolist(), "down": down.tolist(), "cases": cases}


def write_goldens(fixtures_dir, goldens_dir):
    model_dir = os.path.join(fixtures_dir, MODEL)
    lora_dir = os.path.join(fixtures_dir, "lora", MODEL)

    changed, pipe = fused_weights(model_dir, os.path.join(lora_dir, f"{EXTRACT_LORA}.safetensors"))
    write_tensors(os.path.join(lora_dir, "extract_tuned.safetensors"), changed)
    cross_check = fused_against_unfused(pipe, goldens_dir)

    resized_tensors, spectra = resized(os.path.join(lora_dir, f"{RESIZE_LORA}.safetensors"))
    write_tensors(os.path.join(goldens_dir, "lora_resize.safetensors"), resized_tensors)
    dynamic = {
        method: {
            "param": t,
            "max_rank": DYNAMIC_MAX_RANK,
            "modules": {m: dict(zip(("rank", "margin"), dynamic_rank(S, method, t))) for m, S in spectra.items()},
        }
        for method, t in DYNAMIC.items()
    }
    write_json(
        os.path.join(goldens_dir, "lora_resize.json"),
        {
            "description": __doc__,
            "extract": {
                "model": MODEL,
                "lora": f"lora/{MODEL}/{EXTRACT_LORA}.safetensors",
                "tuned_weights": f"lora/{MODEL}/extract_tuned.safetensors",
                "changed_tensors": len(changed),
                "golden_run": f"lora.json runs.{MODEL}.{EXTRACT_LORA}",
                "cross_check": cross_check,
            },
            "resize": {
                "lora": f"lora/{MODEL}/{RESIZE_LORA}.safetensors",
                "new_rank": NEW_RANK,
                "new_conv_rank": NEW_CONV_RANK,
                "file": "lora_resize.safetensors",
                "modules": len(spectra),
                "singular_values": {m: [round(float(s), 6) for s in S[:5]] for m, S in spectra.items()},
            },
            "dynamic": dynamic,
            "clamp": clamp_cases(),
        },
    )
    print(f"lora_extract: {len(changed)} fused tensors; {len(spectra)} resized modules; {cross_check}")


def fused_against_unfused(pipe, goldens_dir):
    """The fused pipeline's final latents against the peft run of lora.json (diffusers, unfused)."""
    import json

    from . import lora
    from safetensors import safe_open

    with open(os.path.join(goldens_dir, "lora.json")) as f:
        run = json.load(f)["runs"][MODEL][EXTRACT_LORA]
    latents = lora.run(pipe, MODEL, lora.RUNS[EXTRACT_LORA][0])[1]
    with safe_open(os.path.join(goldens_dir, MODEL, run["latents_file"]), "pt") as f:
        golden = f.get_tensor(run["latents_key"])
    diff = (latents - golden).abs().max().item()
    return {
        "latents_max_abs_diff": diff,
        "relative": diff / golden.abs().max().item(),
        "latents": tensor_stats(latents),
    }
