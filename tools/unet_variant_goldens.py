#!/usr/bin/env python3
"""A very small UNet2DConditionModel using the config options SD 1.5 leaves at their defaults,
and its diffusers outputs, for sd-unet's tests.

Writes fixtures/unet-variant/unet/{config.json, diffusion_pytorch_model.safetensors} (f16) and
fixtures/goldens/unet-variant/unet.safetensors (cases as in goldens/<model>/unet.safetensors:
`<case>/sample`, `<case>/timestep`, `<case>/encoder_hidden_states`, `<case>/out`, computed in
f32 on the f16 weights).

The config exercises: per-block lists (layers_per_block, attention_head_dim,
transformer_layers_per_block, only_cross_attention), attn1 attending to the text
(only_cross_attention), sin-then-cos timestep features with freq_shift 1, a time embedding width
other than 4x channels, center_input_sample, conv_in/conv_out kernels 5 and 1, the asymmetric
pad of downsample_padding 0, mid_block_scale_factor 2, resnet_out_scale_factor 3 (which diffusers
ignores for these block types), linear projections, 3 output channels and norm_eps 1e-6.

Run from the repository root: python tools/unet_variant_goldens.py
Deterministic (one thread, fixed seeds): a rerun gives byte-identical files.
"""

import os
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from fixturegen.common import fresh_dir, seeded_randn, write_tensors  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(TOOLS_DIR), "fixtures")
CONFIG = {
    "in_channels": 4,
    "out_channels": 3,
    "block_out_channels": [8, 16],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": [1, 2],
    "attention_head_dim": [2, 4],
    "transformer_layers_per_block": [2, 1],
    "only_cross_attention": [True, False],
    "cross_attention_dim": 12,
    "norm_num_groups": 4,
    "norm_eps": 1e-6,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "time_embedding_dim": 24,
    "center_input_sample": True,
    "conv_in_kernel": 5,
    "conv_out_kernel": 1,
    "downsample_padding": 0,
    "mid_block_scale_factor": 2.0,
    "resnet_out_scale_factor": 3.0,
    "use_linear_projection": True,
    "sample_size": 8,
}
SEED_WEIGHTS, SEED_SAMPLE, SEED_CONTEXT = 400, 401, 402
CASES = [("b2_square_t500", 2, 8, 8, 500), ("b1_nonsquare_t37.5", 1, 8, 12, 37.5)]


def randomise_(model, seed):
    """Seeded values for every parameter, as tools/fixturegen does, rounded to f16."""
    gen = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            p.copy_(p.half().float())


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED_WEIGHTS)
    unet = UNet2DConditionModel(**CONFIG).eval()
    randomise_(unet, SEED_WEIGHTS)
    goldens = {}
    for name, batch, h, w, t in CASES:
        sample = seeded_randn((batch, 4, h, w), SEED_SAMPLE)
        context = seeded_randn((batch, 5, CONFIG["cross_attention_dim"]), SEED_CONTEXT)
        with torch.no_grad():
            goldens[f"{name}/out"] = unet(sample, t, encoder_hidden_states=context).sample
        goldens[f"{name}/sample"] = sample
        goldens[f"{name}/timestep"] = torch.tensor(t, dtype=torch.float32)
        goldens[f"{name}/encoder_hidden_states"] = context
    folder = os.path.join(FIXTURES, "unet-variant", "unet")
    fresh_dir(folder)
    unet.to(torch.float16).save_pretrained(folder)
    write_tensors(os.path.join(FIXTURES, "goldens", "unet-variant", "unet.safetensors"), goldens)
    print("wrote", folder, "and goldens/unet-variant/unet.safetensors")


if __name__ == "__main__":
    main()
