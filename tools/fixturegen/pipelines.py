"""The tiny random SD pipelines: configs, parameter randomisation, and saving in diffusers layout.

Weights are stored in f16 to keep the repository small; every golden is computed in f32 from
those f16-rounded values (see common.load_pipeline), so a Rust loader that upcasts f16 sees
exactly the numbers the reference saw.
"""

import json
import math
import os
import shutil

import torch
from torch import nn
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .common import fresh_dir

# The CLIP BPE files sd-clip embeds, in the repository (override with SD_RS_SHARED=/path/to/shared
# to read $SD_RS_SHARED/data/clip-tokenizer instead; the files are the same).
TOKENIZER_SOURCE = (
    os.path.join(os.environ["SD_RS_SHARED"], "data", "clip-tokenizer")
    if "SD_RS_SHARED" in os.environ
    else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sd-clip", "data")
)
TOKENIZER_FILES = ("vocab.json", "merges.txt", "SOURCE.md")

# SD 1.5's scheduler/scheduler_config.json, key for key (it predates `timestep_spacing`, so each
# scheduler class swapped in with from_config falls back to its own default spacing).
SD15_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

# SD 1.5 ships this with model_max_length 77; without it transformers 5 picks a huge length
# and StableDiffusionPipeline fails.
TOKENIZER_CONFIG = {
    "tokenizer_class": "CLIPTokenizer",
    "model_max_length": 77,
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "do_lower_case": True,
    "add_prefix_space": False,
    "errors": "replace",
}

# Shaped like diffusers' StableDiffusionPipeline fast-test components, with SD 1.5's text
# encoder settings (real vocabulary, quick_gelu) and 32 norm groups.
TINY_SD = {
    "seed": 1,
    "unet": dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        # diffusers' naming quirk: this is the number of heads (8 heads of 64/8 = 8 channels).
        attention_head_dim=8,
    ),
    "vae": dict(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        layers_per_block=1,
    ),
    "text_encoder": dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
        pad_token_id=1,
        bos_token_id=49406,
        eos_token_id=49407,
    ),
}

# Deliberately different in every knob a loader might hard-code: three UNet levels, per-level
# head counts (head dims 8, 16, 8), linear proj_in/out, one layer per block, 8 norm groups,
# upcast_attention, a three-level VAE (scale factor 4 instead of 2), a narrower CLIP with gelu,
# 2 heads of 12 channels and 3 layers. Widths are small because the CLIP token embedding
# (49408 x hidden) dominates the fixture size.
TINY_SD_ALT = {
    "seed": 2,
    "unet": dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        norm_num_groups=8,
        attention_head_dim=(2, 2, 4),
        use_linear_projection=True,
        upcast_attention=True,
    ),
    "vae": dict(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    ),
    "text_encoder": dict(
        vocab_size=49408,
        hidden_size=24,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=24,
        pad_token_id=1,
        bos_token_id=49406,
        eos_token_id=49407,
    ),
}

# The inpainting UNet goes with tiny-sd's VAE and text encoder: 9 input channels (latents, mask,
# masked-image latents), otherwise tiny-sd's layout at a narrower width and one layer per block
# to keep it small.
INPAINT_UNET_SEED = 3
INPAINT_UNET = dict(TINY_SD["unet"], in_channels=9, block_out_channels=(32, 32), layers_per_block=1)

INPAINT_README = """# tiny-sd-inpaint

Only the 9-channel inpainting UNet (`unet/`). The VAE, text encoder, tokenizer and scheduler are
tiny-sd's (`../tiny-sd/`); they are not copied here to keep the fixtures small. With diffusers:

    StableDiffusionInpaintPipeline.from_pretrained(
        "fixtures/tiny-sd", unet=UNet2DConditionModel.from_pretrained("fixtures/tiny-sd-inpaint/unet"))

Made by tools/make_fixtures.py; see tools/README.md.
"""

# Standard deviations of the randomisation (see randomise_parameters).
BIAS_STD = 0.1
NORM_WEIGHT_STD = 0.1
TOKEN_EMBEDDING_STD = 0.5
POSITION_EMBEDDING_STD = 0.2


def randomise_parameters(model, generator):
    """Overwrite every parameter with seeded random values.

    Default initialisations leave many biases at 0 and norm weights at 1, so a loader that drops
    such a tensor would still pass. Here every tensor is random: linear/conv weights N(0, 1/fan_in) so activations keep
    their scale, biases N(0, 0.1^2), norm weights 1 + N(0, 0.1^2), norm biases N(0, 0.1^2).
    Raises on a parameter it does not know, so a new module type cannot slip through unrandomised.
    """
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, param in module.named_parameters(recurse=False):
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                full_name = f"{module_name}.{name}"
                if isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                    value = 1.0 + NORM_WEIGHT_STD * noise if name == "weight" else NORM_WEIGHT_STD * noise
                elif isinstance(module, (nn.Linear, nn.Conv2d)) and name == "weight":
                    fan_in = param[0].numel()
                    value = noise / math.sqrt(fan_in)
                elif isinstance(module, (nn.Linear, nn.Conv2d)) and name == "bias":
                    value = BIAS_STD * noise
                elif isinstance(module, nn.Embedding) and "position" in module_name:
                    value = POSITION_EMBEDDING_STD * noise
                elif isinstance(module, nn.Embedding):
                    value = TOKEN_EMBEDDING_STD * noise
                else:
                    raise RuntimeError(f"randomise_parameters: no rule for {full_name} ({type(module).__name__})")
                param.copy_(value.to(param.dtype))


def build_unet(config, seed):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**config)
    randomise_parameters(unet, torch.Generator("cpu").manual_seed(seed * 1000 + 1))
    return unet.to(torch.float16).eval()


def build_components(spec):
    """The f16 modules of one pipeline, all randomised from spec['seed']."""
    seed = spec["seed"]
    unet = build_unet(spec["unet"], seed)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**spec["vae"])
    randomise_parameters(vae, torch.Generator("cpu").manual_seed(seed * 1000 + 2))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"]))
    randomise_parameters(text_encoder, torch.Generator("cpu").manual_seed(seed * 1000 + 3))
    return {
        "unet": unet,
        "vae": vae.to(torch.float16).eval(),
        "text_encoder": text_encoder.to(torch.float16).eval(),
    }


def write_tokenizer_dir(path):
    """vocab.json + merges.txt (+ their license note) and SD 1.5's tokenizer_config.json."""
    fresh_dir(path)
    for name in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(TOKENIZER_SOURCE, name), os.path.join(path, name))
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")


def write_scheduler_dir(path):
    fresh_dir(path)
    with open(os.path.join(path, "scheduler_config.json"), "w", encoding="utf-8") as f:
        json.dump(SD15_SCHEDULER_CONFIG, f, indent=2)
        f.write("\n")


def save_pipeline(pipeline_cls, components, tokenizer_dir, path):
    """save_pretrained the whole pipeline, then put back our own tokenizer/ and scheduler/ files
    (transformers 5 would write a 3.6 MB tokenizer.json, and the scheduler must be SD 1.5's file)."""
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    pipe = pipeline_cls(
        **components,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    fresh_dir(path)
    pipe.save_pretrained(path, safe_serialization=True)
    write_tokenizer_dir(os.path.join(path, "tokenizer"))
    write_scheduler_dir(os.path.join(path, "scheduler"))


def write_pipelines(fixtures_dir):
    """Write tiny-sd/, tiny-sd-alt/ and tiny-sd-inpaint/ (UNet only); returns their paths by name."""
    paths = {name: os.path.join(fixtures_dir, name) for name in ("tiny-sd", "tiny-sd-alt", "tiny-sd-inpaint")}
    # save_pipeline recreates the pipeline folder, so the tokenizer it builds from lives elsewhere.
    scratch_tokenizer = os.path.join(fixtures_dir, ".tokenizer-scratch")
    write_tokenizer_dir(scratch_tokenizer)
    save_pipeline(StableDiffusionPipeline, build_components(TINY_SD), scratch_tokenizer, paths["tiny-sd"])
    save_pipeline(StableDiffusionPipeline, build_components(TINY_SD_ALT), scratch_tokenizer, paths["tiny-sd-alt"])
    shutil.rmtree(scratch_tokenizer)
    # Both pipelines use the same CLIP vocabulary: one copy keeps the fixtures under 25 MB.
    alt_tokenizer = os.path.join(paths["tiny-sd-alt"], "tokenizer")
    shutil.rmtree(alt_tokenizer)
    os.symlink(os.path.join("..", "tiny-sd", "tokenizer"), alt_tokenizer)

    fresh_dir(paths["tiny-sd-inpaint"])
    build_unet(INPAINT_UNET, INPAINT_UNET_SEED).save_pretrained(os.path.join(paths["tiny-sd-inpaint"], "unet"))
    with open(os.path.join(paths["tiny-sd-inpaint"], "README.md"), "w", encoding="utf-8") as f:
        f.write(INPAINT_README)
    return paths
