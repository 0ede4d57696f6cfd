"""LyCORIS Tucker (CP) conv factors (issue 13): LoHa with `hada_t1`/`hada_t2`, LoKr with `lokr_t2`.
Run with `make_fixtures.py --only lycoris_tucker`.

Files, fixtures/lora/tiny-sd/<case>.safetensors (f32, seeded random factors):
  loha_tucker  on the first resnet's conv1 (3x3): hada_w1_a [r, out], hada_w1_b [r, in],
               hada_t1 [r, r, 3, 3], the same for w2/t2, alpha (rank r = hada_w1_b.shape[0] = 3).
  lokr_tucker  on the first downsampler conv (3x3): lokr_w1 [a, b] (full), lokr_w2_a [r, c],
               lokr_w2_b [r, d], lokr_t2 [r, r, 3, 3], alpha; W is [a*c, b*d, 3, 3]; rank 2.

Golden, goldens/lycoris_tucker.safetensors: per module (key = the diffusers UNet module path),
scale * dW as LyCORIS defines it (lycoris/functional `make_weight_cp`, A1111's
extensions-builtin/Lora/lyco_helpers.py), written here as one einsum of the documented formula:
  cp(t, a, b) = einsum("i j k l, i p, j r -> p r k l", t, a, b)
  LoHa: dW = cp(t1, w1_a, w1_b) * cp(t2, w2_a, w2_b)
  LoKr: dW = kron(w1[:, :, None, None], cp(t2, w2_a, w2_b))
  scale = alpha / rank (LoHa rank = hada_w1_b.shape[0], LoKr rank = lokr_w2_b.shape[0]).
`cross_check` records the same deltas made A1111's way (two einsums) against these.
"""

import os

import torch
from diffusers import StableDiffusionPipeline

from .common import load_pipeline, write_json, write_tensors
from .lora import factorization, kohya_metadata, kohya_name, save

MODEL = "tiny-sd"
SEED = 7000
STRENGTH = 0.3


def cp(t, a, b):
    return torch.einsum("i j k l, i p, j r -> p r k l", t, a, b)


def cp_a1111(t, a, b):
    temp = torch.einsum("i j k l, j r -> i r k l", t, b)
    return torch.einsum("i j k l, i r -> r j k l", temp, a)


def randn(shape, std, gen):
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std


def write_goldens(fixtures_dir, goldens_dir):
    pipe = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, MODEL))
    modules = dict(pipe.unet.named_modules())
    conv1 = next(n for n in modules if n.endswith("resnets.0.conv1"))
    down = next(n for n in modules if n.endswith("downsamplers.0.conv"))
    gen = torch.Generator("cpu").manual_seed(SEED)
    lora_dir = os.path.join(fixtures_dir, "lora", MODEL)
    golden, checks = {}, {}

    # LoHa: each half's entries have std ~1 before w1_a's factor; dW entries std ~ STRENGTH / sqrt(fan_in).
    weight = modules[conv1].weight
    out_ch, in_ch, kh, kw = weight.shape
    rank, alpha = 3, 1.5
    scale = alpha / rank
    fan_in = in_ch * kh * kw
    t = {f"hada_t{i}": randn((rank, rank, kh, kw), rank**-0.5, gen) for i in (1, 2)}
    f = {
        "hada_w1_a": randn((rank, out_ch), STRENGTH / (scale * fan_in**0.5), gen),
        "hada_w1_b": randn((rank, in_ch), rank**-0.5, gen),
        "hada_w2_a": randn((rank, out_ch), 1.0, gen),
        "hada_w2_b": randn((rank, in_ch), rank**-0.5, gen),
    }
    key = kohya_name("unet", conv1)
    tensors = {f"{key}.{k}": v for k, v in {**f, **t}.items()}
    tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save(tensors, os.path.join(lora_dir, "loha_tucker.safetensors"), kohya_metadata("loha"))
    delta = cp(t["hada_t1"], f["hada_w1_a"], f["hada_w1_b"]) * cp(t["hada_t2"], f["hada_w2_a"], f["hada_w2_b"])
    other = cp_a1111(t["hada_t1"], f["hada_w1_a"], f["hada_w1_b"]) * cp_a1111(t["hada_t2"], f["hada_w2_a"], f["hada_w2_b"])
    golden[conv1] = scale * delta
    checks[conv1] = {"shape": list(delta.shape), "a1111_max_abs_diff": (delta - other).abs().max().item()}

    # LoKr: w1 full, w2 Tucker.
    weight = modules[down].weight
    (a, c), (b, d) = (factorization(n) for n in weight.shape[:2])
    kh, kw = weight.shape[2:]
    rank, alpha = 2, 3.0
    scale = alpha / rank
    fan_in = weight.shape[1] * kh * kw
    w1 = randn((a, b), STRENGTH / (scale * fan_in**0.5), gen)
    w2a, w2b = randn((rank, c), 1.0, gen), randn((rank, d), 1.0, gen)
    t2 = randn((rank, rank, kh, kw), rank**-1.0, gen)
    key = kohya_name("unet", down)
    tensors = {
        f"{key}.lokr_w1": w1,
        f"{key}.lokr_w2_a": w2a,
        f"{key}.lokr_w2_b": w2b,
        f"{key}.lokr_t2": t2,
        f"{key}.alpha": torch.tensor(alpha),
    }
    save(tensors, os.path.join(lora_dir, "lokr_tucker.safetensors"), kohya_metadata("lokr"))
    delta = torch.kron(w1[:, :, None, None], cp(t2, w2a, w2b).contiguous())
    other = torch.kron(w1.unsqueeze(2).unsqueeze(2), cp_a1111(t2, w2a, w2b).contiguous())
    if delta.shape != weight.shape:
        raise RuntimeError(f"LoKr delta {tuple(delta.shape)} does not fit {down} {tuple(weight.shape)}")
    golden[down] = scale * delta
    checks[down] = {"shape": list(delta.shape), "a1111_max_abs_diff": (delta - other).abs().max().item()}

    write_tensors(os.path.join(goldens_dir, "lycoris_tucker.safetensors"), golden)
    write_json(
        os.path.join(goldens_dir, "lycoris_tucker.json"),
        {
            "description": __doc__,
            "files": {"loha_tucker": f"lora/{MODEL}/loha_tucker.safetensors", "lokr_tucker": f"lora/{MODEL}/lokr_tucker.safetensors"},
            "modules": {"loha_tucker": conv1, "lokr_tucker": down},
            "cross_check": checks,
        },
    )
    print(f"lycoris_tucker: {checks}")
