#!/usr/bin/env python3
"""Full-size SD 1.5 UNet and VAE with random weights, their diffusers outputs, and PyTorch's
time and memory for the same work. Nothing here is committed: the files are large (1.9 GB).

    python tools/full_size_goldens.py write [--out DIR]
    python tools/full_size_goldens.py measure unet|vae-decode [--size 512]

`write` builds diffusers' UNet2DConditionModel and AutoencoderKL from SD 1.5's configs (the same
JSON as sd-unet's SD15_UNET_CONFIG and sd-vae's SD15_VAE_CONFIG), gives every parameter seeded
random values (weights N(0, 1/fan_in), biases N(0, 0.1^2), norm weights 1 + N(0, 0.1^2)), rounds
them to f16 and saves them as a diffusers folder (model_index.json, unet/, vae/; f16 files), then
computes in f32 on the f16 values and writes goldens.safetensors next to them:

- unet/sample [2, 4, 64, 64], unet/encoder_hidden_states [2, 77, 768], unet/timestep (500),
  unet/out = unet(sample, 500, encoder_hidden_states).sample
- vae/latents [1, 4, 64, 64], vae/image = vae.decode(latents).sample        (512x512)
- vae/encode_image [1, 3, 256, 256], vae/encode_mean, vae/encode_logvar (clamped)

sd-unet's and sd-vae's #[ignore]d full_size tests read them (SD_FULL_SIZE_DIR, default
sd-full-size in the system temp folder).

`measure` runs the same work once in PyTorch with freshly initialised random f32 weights and
prints the wall and CPU seconds of the forward call and the peak RSS of the forward phase (VmHWM after
resetting it with /proc/self/clear_refs once the model is built); run it under
`/usr/bin/time -v` for the whole process's peak. Uses torch's default thread count.
"""

import argparse
import json
import os
import sys
import tempfile
import time

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

diffusers_logging.set_verbosity_error()

# SD 1.5's unet/config.json and vae/config.json (runwayml/stable-diffusion-v1-5).
SD15_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD15_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

SEED_WEIGHTS_UNET, SEED_WEIGHTS_VAE = 300, 301
SEED_SAMPLE, SEED_CONTEXT, SEED_LATENTS, SEED_IMAGE = 310, 311, 312, 313
TIMESTEP = 500


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def randomise_(model, seed):
    """Seeded values for every parameter (so a dropped bias or norm weight shows), rounded to f16."""
    gen = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            p.copy_(p.half().float())


def write(out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
            f,
            indent=1,
        )
    goldens = {}

    torch.manual_seed(SEED_WEIGHTS_UNET)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    randomise_(unet, SEED_WEIGHTS_UNET)
    sample, context = randn((2, 4, 64, 64), SEED_SAMPLE), randn((2, 77, 768), SEED_CONTEXT)
    start = time.perf_counter()
    with torch.no_grad():
        goldens["unet/out"] = unet(sample, TIMESTEP, encoder_hidden_states=context).sample
    print(f"unet forward: {time.perf_counter() - start:.1f} s")
    goldens.update({"unet/sample": sample, "unet/encoder_hidden_states": context})
    goldens["unet/timestep"] = torch.tensor(float(TIMESTEP))
    unet.to(torch.float16).save_pretrained(os.path.join(out, "unet"))
    del unet

    torch.manual_seed(SEED_WEIGHTS_VAE)
    vae = AutoencoderKL(**SD15_VAE).eval()
    randomise_(vae, SEED_WEIGHTS_VAE)
    latents = randn((1, 4, 64, 64), SEED_LATENTS)
    image = randn((1, 3, 256, 256), SEED_IMAGE).clamp(-1, 1)
    with torch.no_grad():
        start = time.perf_counter()
        goldens["vae/image"] = vae.decode(latents).sample
        print(f"vae decode 512x512: {time.perf_counter() - start:.1f} s")
        dist = vae.encode(image).latent_dist
    goldens.update({"vae/latents": latents, "vae/encode_image": image})
    goldens.update({"vae/encode_mean": dist.mean, "vae/encode_logvar": dist.logvar})
    vae.to(torch.float16).save_pretrained(os.path.join(out, "vae"))

    save_file({k: v.contiguous() for k, v in goldens.items()}, os.path.join(out, "goldens.safetensors"))
    print("wrote", out)


def vm_hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(what, size):
    if what == "unet":
        model = UNet2DConditionModel(**SD15_UNET).eval()
        sample, context = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 768)
        run = lambda: model(sample, TIMESTEP, encoder_hidden_states=context).sample  # noqa: E731
        label = "UNet forward, batch 2, 64x64 latents, f32"
    else:
        model = AutoencoderKL(**SD15_VAE).eval()
        latents = torch.randn(1, 4, size // 8, size // 8)
        run = lambda: model.decode(latents).sample  # noqa: E731
        label = f"VAE decode {size}x{size}, f32"
    reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.no_grad():
        run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"pytorch {label}: {seconds:.2f} s wall, {cpu:.1f} s CPU, forward-phase peak RSS "
          f"{vm_hwm_kib() / 1024**2:.2f} GiB ({torch.get_num_threads()} threads)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("--out", default=os.environ.get("SD_FULL_SIZE_DIR", os.path.join(tempfile.gettempdir(), "sd-full-size")))
    m = sub.add_parser("measure")
    m.add_argument("what", choices=["unet", "vae-decode"])
    m.add_argument("--size", type=int, default=512, help="image side for vae-decode")
    args = parser.parse_args()
    if args.command == "write":
        write(args.out)
    else:
        measure(args.what, args.size)


if __name__ == "__main__":
    main()
