"""Helpers shared by the fixture writers: seeding, file writing, and loading the pipelines back."""

import json
import os
import shutil

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file
from transformers.utils import logging as transformers_logging

# One CPU thread: the order of float reductions then does not depend on the machine's core
# count, so a re-run elsewhere gives the same bits (the models are tiny, speed does not matter).
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# The reference's warnings (CLIP truncation, deprecations) are expected here; keep the output short.
diffusers_logging.set_verbosity_error()
diffusers_logging.disable_progress_bar()
transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


def cpu_generator(seed):
    """A torch CPU generator, as diffusers users pass to pipelines."""
    return torch.Generator("cpu").manual_seed(seed)


def seeded_randn(shape, seed):
    """randn drawn from a fresh CPU generator, so each golden input is reproducible on its own."""
    return torch.randn(shape, generator=cpu_generator(seed), dtype=torch.float32)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def write_tensors(path, tensors, metadata=None):
    """Save a dict of tensors as safetensors; floats as f32, integers as i64."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = {}
    for name, value in tensors.items():
        t = torch.as_tensor(value).detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float32)
        elif t.dtype != torch.bool:
            t = t.to(torch.int64)
        out[name] = t.contiguous()
    save_file(out, path, metadata=metadata)


def fresh_dir(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)


def tensor_stats(t):
    """Short description of a tensor for the manifests (helps pick tolerances)."""
    t = torch.as_tensor(t).detach().to(torch.float64)
    return {
        "shape": list(t.shape),
        "mean": round(float(t.mean()), 6),
        "std": round(float(t.std()), 6) if t.numel() > 1 else 0.0,
        "max_abs": round(float(t.abs().max()), 6),
    }


def load_pipeline(pipeline_cls, path):
    """Load a saved (f16) pipeline folder the way a user would, computing in f32."""
    pipe = pipeline_cls.from_pretrained(path, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(pipe, name)
        dtypes = {p.dtype for p in module.parameters()}
        if dtypes != {torch.float32}:
            raise RuntimeError(f"{name} of {path} loaded as {dtypes}, expected f32")
    return pipe


def png_bytes_equal(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b))
