#!/usr/bin/env python3
"""PyTorch's side of `tools/bench_compare.py`: the work `sd bench --component C` times, done by
diffusers/transformers on freshly initialised random f32 weights (torch's default init), on
torch's default thread count, in this process alone.

    python tools/bench_torch.py unet [--runs 3] [--steps 2]

Components (one per process, so each peak RSS is that component's):

- clip        CLIPTextModel (ViT-L/14 text tower) on 2 prompts × 77 tokens
- unet        one UNet forward at batch 2 (a classifier-free-guidance step), 64×64 latents
- unet-b1     the same at batch 1
- vae-decode  AutoencoderKL.decode of [1, 4, 64, 64] latents → 512×512
- vae-encode  AutoencoderKL.encode of a [1, 3, 512, 512] image
- txt2img     StableDiffusionPipeline, 512×512, `--steps` PNDM steps, guidance 7.5, to a PIL image
              (the time is the whole call; its peak RSS is the one a user's generation sees)

Prints one JSON line: {"component", "times" (seconds, each run), "median", "peak_rss_gib"
(VmHWM of the whole process: interpreter, libraries, weights, activations), "threads"}.
One untimed warm-up run precedes the timed ones (as in `sd bench`), except for txt2img.

`--device cuda --dtype fp16` runs the same work on the GPU in half precision (the usual way to
run SD 1.5 there; tools/gpu_check.sh compares `sd bench --backend cuda` with it): each timed run
ends with `torch.cuda.synchronize()`, and the line gains "peak_gpu_gib"
(torch.cuda.max_memory_allocated).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)
from full_size_goldens import SD15_UNET, SD15_VAE  # noqa: E402

diffusers_logging.set_verbosity_error()
transformers_logging.set_verbosity_error()

# openai/clip-vit-large-patch14's text config, as SD 1.5's text_encoder/config.json.
SD15_CLIP = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768,
)
PROMPTS = ["", "a photograph of an astronaut riding a horse"]
# The CLIP BPE files sd-clip embeds (the same vocab.json and merges.txt as openai/clip-vit-large-patch14).
TOKENIZER_DIR = os.path.join(TOOLS_DIR, "..", "sd-clip", "data")


def vm_hwm_gib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def tokenizer():
    return CLIPTokenizer(os.path.join(TOKENIZER_DIR, "vocab.json"), os.path.join(TOKENIZER_DIR, "merges.txt"),
                         model_max_length=77)


def clip_model():
    return CLIPTextModel(CLIPTextConfig(**SD15_CLIP)).eval()


def prepare(component, steps, device, dtype, size=64, batch=None):
    """Build the model on `device` in `dtype` and return the call to time: latents of side `size`
    (64 → 512² images), `batch` images per call (default 2 for unet, else 1)."""
    torch.manual_seed(0)

    def place(model):
        return model.to(device=device, dtype=dtype)

    def randn(*shape):
        return torch.randn(*shape).to(device=device, dtype=dtype)

    if component == "clip":
        model, tok = place(clip_model()), tokenizer()
        ids = tok(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids.to(device)
        return lambda: model(ids).last_hidden_state
    if component in ("unet", "unet-b1"):
        model = place(UNet2DConditionModel(**SD15_UNET).eval())
        batch = batch or (2 if component == "unet" else 1)
        sample, context = randn(batch, 4, size, size), randn(batch, 77, 768)
        return lambda: model(sample, 500, encoder_hidden_states=context).sample
    if component == "vae-decode":
        model = place(AutoencoderKL(**SD15_VAE).eval())
        latents = randn(batch or 1, 4, size, size)
        return lambda: model.decode(latents).sample
    if component == "vae-encode":
        model = place(AutoencoderKL(**SD15_VAE).eval())
        image = randn(batch or 1, 3, 8 * size, 8 * size) * 2 - 1
        return lambda: model.encode(image).latent_dist.mean
    if component == "txt2img":
        pipe = StableDiffusionPipeline(
            vae=place(AutoencoderKL(**SD15_VAE).eval()),
            text_encoder=place(clip_model()),
            tokenizer=tokenizer(),
            unet=place(UNet2DConditionModel(**SD15_UNET).eval()),
            scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1, beta_schedule="scaled_linear",
                                    beta_start=0.00085, beta_end=0.012),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator("cpu").manual_seed(0)
        return lambda: pipe(PROMPTS[1], num_inference_steps=steps, guidance_scale=7.5,
                            height=8 * size, width=8 * size, num_images_per_prompt=batch or 1,
                            generator=generator).images[0]
    raise SystemExit(f"unknown component {component!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("component", choices=["clip", "unet", "unet-b1", "vae-decode", "vae-encode", "txt2img"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="txt2img's inference steps")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    parser.add_argument("--size", type=int, default=64, help="latent side (64 → 512² images)")
    parser.add_argument("--batch", type=int, default=None, help="images per call (unet: 2, others: 1)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    run = prepare(args.component, args.steps, device, dtype, args.size, args.batch)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    with torch.inference_mode():
        if args.component != "txt2img":
            run()
        for _ in range(args.runs):
            sync()
            start = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - start)
    result = {
        "component": args.component,
        "device": args.device,
        "dtype": args.dtype,
        "times": times,
        "median": statistics.median(times),
        "peak_rss_gib": vm_hwm_gib(),
        "threads": torch.get_num_threads(),
        "size": args.size,
        "batch": args.batch,
        # The widest SIMD level PyTorch's CPU kernels dispatch to here (e.g. AVX2, AVX512).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
    print(json.dumps(result))


if __name__ == "__main__":
    main()
