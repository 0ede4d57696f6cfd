#!/usr/bin/env python3
"""Which UNet weights a *full* LDM checkpoint (one with `model_ema.*` copies, like
`v1-5-pruned.safetensors`) gives, according to diffusers' `from_single_file`.

The full checkpoint is fixtures/ldm/tiny-sd.safetensors plus an EMA copy of every UNet tensor
under LDM's flattened EMA name (`model.diffusion_model.a.b.weight` -> `model_ema.diffusion_modelabweight`)
holding the *negated* weights (negation is exact in f16, so a test can build the same file
bit for bit without Python), plus the `model_ema.decay` / `model_ema.num_updates` buffers real
full checkpoints carry. The file itself is not committed (it would double the UNet's size);
`full_checkpoint()` below is the recipe the Rust test follows.

Writes fixtures/goldens/tiny-sd/ema.safetensors:
  sample [1,4,8,8], timestep (scalar), encoder_hidden_states [1,77,32],
  non_ema/out = UNet of from_single_file(extract_ema=False) (diffusers' default),
  ema/out     = UNet of from_single_file(extract_ema=True),
computed in f32 on the f16 weights.

Run from the repository root: python tools/ema_goldens.py
Deterministic (one thread, fixed seeds): a rerun gives byte-identical files.
"""

import os
import sys
import tempfile

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

from fixturegen.common import seeded_randn, write_tensors  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(TOOLS_DIR), "fixtures")
UNET_PREFIX = "model.diffusion_model."
SEED_SAMPLE, SEED_CONTEXT, TIMESTEP = 500, 501, 500


def ema_key(key):
    """LDM's EMA buffer name: the first component kept, the dots after it dropped."""
    first, rest = key.split(".", 1)
    return "model_ema." + rest.replace(".", "")


def full_checkpoint(single_file):
    state = load_file(single_file)
    for key in sorted(state):
        if key.startswith(UNET_PREFIX):
            state[ema_key(key)] = -state[key]
    state["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    state["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    return state


def unet_of(path, extract_ema):
    pipe = StableDiffusionPipeline.from_single_file(
        path,
        config=os.path.join(FIXTURES, "tiny-sd"),
        extract_ema=extract_ema,
        safety_checker=None,
        torch_dtype=torch.float32,
    )
    return pipe.unet.float().eval()


def main():
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tiny-sd-full.safetensors")
        save_file(full_checkpoint(os.path.join(FIXTURES, "ldm", "tiny-sd.safetensors")), path)
        unets = {"non_ema": unet_of(path, False), "ema": unet_of(path, True)}
        width = unets["ema"].config.cross_attention_dim
        sample = seeded_randn((1, 4, 8, 8), SEED_SAMPLE)
        context = seeded_randn((1, 77, width), SEED_CONTEXT)
        goldens = {
            "sample": sample,
            "timestep": torch.tensor(float(TIMESTEP), dtype=torch.float32),
            "encoder_hidden_states": context,
        }
        with torch.no_grad():
            for name, unet in unets.items():
                goldens[f"{name}/out"] = unet(sample, TIMESTEP, encoder_hidden_states=context).sample
    difference = (goldens["ema/out"] - goldens["non_ema/out"]).abs().max().item()
    assert difference > 1e-3, f"EMA and non-EMA outputs agree ({difference}): the test would prove nothing"
    write_tensors(os.path.join(FIXTURES, "goldens", "tiny-sd", "ema.safetensors"), goldens)
    print("wrote goldens/tiny-sd/ema.safetensors; EMA vs non-EMA max difference", difference)


if __name__ == "__main__":
    main()
