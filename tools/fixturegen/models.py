"""Component goldens: CLIP text encoder, UNet and VAE outputs on fixed inputs, per pipeline.

Each component is loaded from the committed f16 files and run in f32 (common.load_pipeline).
"""

import os

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from .common import load_pipeline, seeded_randn, tensor_stats, write_json, write_tensors

CLIP_PROMPTS = [
    "a photo of a cat",
    "",
    "A Portrait, by Greg Rutkowski & Alphonse Mucha!!! \U0001f525 caf\u00e9",
    "a very long prompt " + ", ".join(f"detail number {i}" for i in range(40)),
]

# (case name, batch, latent height, latent width, timestep). 981.3 checks that a float timestep
# goes into the sinusoidal embedding unrounded; the non-square case catches h/w swaps.
UNET_CASES = [
    ("b2_square_t500", 2, None, None, 500),
    ("b2_nonsquare_t981.3", 2, 16, 24, 981.3),
    ("b1_square_t1", 1, None, None, 1),
    # Odd latent sides: diffusers rounds up on the way down and passes `upsample_size` back up.
    ("b1_odd_13x7_t700", 1, 13, 7, 700),
]

# Seeds of the golden inputs; each input has its own so they do not depend on each other's order.
SEED_UNET_SAMPLE = 100
SEED_UNET_CONTEXT = 101
SEED_VAE_LATENTS = 102
SEED_VAE_IMAGE = 103


def clip_goldens(pipe):
    ids = pipe.tokenizer(
        CLIP_PROMPTS, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        out = pipe.text_encoder(ids, output_hidden_states=True)
        # StableDiffusionPipeline's clip_skip=1: hidden_states[-2] through the final layer norm.
        # Computed by hand: diffusers 0.42.1 reaches it through `text_encoder.text_model`, which
        # transformers 5's CLIPTextModel no longer has (encode_prompt(clip_skip=1) raises).
        clip_skip_1 = pipe.text_encoder.final_layer_norm(out.hidden_states[-2])
    tensors = {
        "input_ids": ids,
        "last_hidden_state": out.last_hidden_state,
        # [num_layers + 1, batch, 77, hidden]: index 0 is the embeddings output, index i the
        # output of layer i (before the final layer norm).
        "hidden_states": torch.stack(out.hidden_states),
        "pooler_output": out.pooler_output,
        "prompt_embeds_clip_skip_1": clip_skip_1,
    }
    manifest = {
        "prompts": CLIP_PROMPTS,
        "note": "input_ids from the pipeline's tokenizer call (max_length padding, truncation); no attention "
        "mask is passed, as StableDiffusionPipeline does for SD 1.5.",
        "tensors": {k: tensor_stats(v) for k, v in tensors.items() if k != "input_ids"},
    }
    return tensors, manifest


def unet_goldens(unet, context_dim, cases_to_run=UNET_CASES):
    tensors, cases = {}, {}
    size = unet.config.sample_size
    for name, batch, h, w, t in cases_to_run:
        h, w = h or size, w or size
        sample = seeded_randn((batch, unet.config.in_channels, h, w), SEED_UNET_SAMPLE)
        context = seeded_randn((batch, 77, context_dim), SEED_UNET_CONTEXT)
        with torch.no_grad():
            out = unet(sample, t, encoder_hidden_states=context).sample
        tensors[f"{name}/sample"] = sample
        tensors[f"{name}/timestep"] = torch.tensor(t, dtype=torch.float32)
        tensors[f"{name}/encoder_hidden_states"] = context
        tensors[f"{name}/out"] = out
        cases[name] = {"timestep": t, "timestep_type": type(t).__name__, "out": tensor_stats(out)}
    manifest = {
        "note": "unet(sample, timestep, encoder_hidden_states).sample; the timestep is passed as a Python "
        "int or float (stored here as f32; diffusers casts it to f32 for the embedding).",
        "seeds": {"sample": SEED_UNET_SAMPLE, "encoder_hidden_states": SEED_UNET_CONTEXT},
        "cases": cases,
    }
    return tensors, manifest


def vae_goldens(vae):
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    tensors = {}
    for name, (h, w) in {"decode_square": (16, 16), "decode_nonsquare": (8, 12)}.items():
        latents = seeded_randn((1, vae.config.latent_channels, h, w), SEED_VAE_LATENTS)
        with torch.no_grad():
            tensors[f"{name}/latents"] = latents
            tensors[f"{name}/image"] = vae.decode(latents).sample
    image = seeded_randn((1, 3, 64, 64), SEED_VAE_IMAGE).clamp(-3, 3) / 3
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    tensors["encode/image"] = image
    tensors["encode/mean"] = dist.mean
    # logvar is clamped to [-30, 20] by diffusers' DiagonalGaussianDistribution.
    tensors["encode/logvar"] = dist.logvar
    manifest = {
        "note": "decode: vae.decode(latents).sample (raw latents, no 1/scaling_factor). encode: "
        "vae.encode(image).latent_dist mean and logvar (after diffusers' clamp to [-30, 20]).",
        "vae_scale_factor": scale,
        "scaling_factor": vae.config.scaling_factor,
        "seeds": {"latents": SEED_VAE_LATENTS, "image": SEED_VAE_IMAGE},
        "tensors": {k: tensor_stats(v) for k, v in tensors.items()},
    }
    return tensors, manifest


def write_goldens(fixtures_dir, goldens_dir):
    manifest = {}
    for name in ("tiny-sd", "tiny-sd-alt"):
        pipe = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, name))
        context_dim = pipe.text_encoder.config.hidden_size
        out_dir = os.path.join(goldens_dir, name)
        clip, manifest[f"{name}/clip.safetensors"] = clip_goldens(pipe)
        write_tensors(os.path.join(out_dir, "clip.safetensors"), clip)
        unet, manifest[f"{name}/unet.safetensors"] = unet_goldens(pipe.unet, context_dim)
        write_tensors(os.path.join(out_dir, "unet.safetensors"), unet)
        vae, manifest[f"{name}/vae.safetensors"] = vae_goldens(pipe.vae)
        write_tensors(os.path.join(out_dir, "vae.safetensors"), vae)
        if name == "tiny-sd":
            inpaint_unet = UNet2DConditionModel.from_pretrained(
                os.path.join(fixtures_dir, "tiny-sd-inpaint", "unet"), dtype=torch.float32
            ).eval()
            # One case is enough: what is new here is the 9-channel input.
            unet, manifest["tiny-sd-inpaint/unet.safetensors"] = unet_goldens(inpaint_unet, context_dim, UNET_CASES[:1])
            write_tensors(os.path.join(goldens_dir, "tiny-sd-inpaint", "unet.safetensors"), unet)
    write_json(os.path.join(goldens_dir, "models.json"), manifest)
