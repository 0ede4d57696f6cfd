#!/usr/bin/env python3
"""Diffusers pipeline folder -> LDM ("original Stable Diffusion") single file.

The inverse of what `sd_core::weights` reads: it lets the fixtures hold an LDM single file twin
of each tiny diffusers pipeline, so the Rust LDM key mapping is tested against a file whose
layout diffusers itself accepts (see `check` below).

Library use (tools/make_fixtures.py imports this module):

    diffusers_to_ldm(unet_sd, vae_sd, text_sd, unet_config, vae_config) -> dict
    write_single_file(pipeline_dir, out_path)

Command line:

    python tools/ldm_convert.py write PIPELINE_DIR OUT.safetensors
    python tools/ldm_convert.py check PIPELINE_DIR     # round trip through diffusers' loader
    python tools/ldm_convert.py tiny-pipeline OUT_DIR  # a random tiny SD pipeline, for development
    python tools/ldm_convert.py sd15-names OUT.txt     # SD 1.5 name pairs, checked by diffusers

The mapping is generated from the configs (levels, resnets per level, which levels attend), the
same way the Rust side generates it, so it holds for tiny test models as well as SD 1.5.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
TEXT_MODEL_PREFIX = "text_model."

# Parameter renames inside one module, as (diffusers submodule, LDM submodule).
UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]
VAE_RESNET = [
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("conv_shortcut", "nin_shortcut"),
]
VAE_ATTENTION = [
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
]
# Diffusers' VAE attention projections are linears; LDM's are 1x1 convs.
VAE_ATTENTION_CONVS = {"q", "k", "v", "proj_out"}
SAME = None


def _levels_and_layers(config: dict) -> tuple[int, list[int]]:
    levels = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    if isinstance(layers, int):
        layers = [layers] * levels
    return levels, list(layers)


def unet_module_pairs(config: dict) -> list[tuple[str, str, list | None]]:
    """(diffusers module, LDM module, renames inside) for a UNet2DConditionModel config."""
    levels, layers = _levels_and_layers(config)
    down_attn = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    up_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    pairs = [
        ("time_embedding.linear_1", "time_embed.0", SAME),
        ("time_embedding.linear_2", "time_embed.2", SAME),
        ("conv_in", "input_blocks.0.0", SAME),
        ("mid_block.resnets.0", "middle_block.0", UNET_RESNET),
        ("mid_block.attentions.0", "middle_block.1", SAME),
        ("mid_block.resnets.1", "middle_block.2", UNET_RESNET),
        ("conv_norm_out", "out.0", SAME),
        ("conv_out", "out.2", SAME),
    ]
    # input_blocks.0 is conv_in; then per level one block per resnet (+ its attention at .1)
    # and one for the downsampler, except at the deepest level.
    block = 1
    for level in range(levels):
        for j in range(layers[level]):
            pairs.append((f"down_blocks.{level}.resnets.{j}", f"input_blocks.{block}.0", UNET_RESNET))
            if down_attn[level]:
                pairs.append((f"down_blocks.{level}.attentions.{j}", f"input_blocks.{block}.1", SAME))
            block += 1
        if level < levels - 1:
            pairs.append((f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{block}.0.op", SAME))
            block += 1
    # Up path, deepest first: one more resnet per level than on the way down; the level's last
    # block carries the upsampler after its attention (if any).
    block = 0
    for up in range(levels):
        resnets = layers[levels - 1 - up] + 1
        for j in range(resnets):
            pairs.append((f"up_blocks.{up}.resnets.{j}", f"output_blocks.{block}.0", UNET_RESNET))
            if up_attn[up]:
                pairs.append((f"up_blocks.{up}.attentions.{j}", f"output_blocks.{block}.1", SAME))
            if j == resnets - 1 and up < levels - 1:
                slot = 2 if up_attn[up] else 1
                pairs.append((f"up_blocks.{up}.upsamplers.0.conv", f"output_blocks.{block}.{slot}.conv", SAME))
            block += 1
    return pairs


def vae_module_pairs(config: dict) -> list[tuple[str, str, list | None]]:
    """(diffusers module, LDM module, renames inside) for an AutoencoderKL config."""
    levels = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    pairs = [("quant_conv", "quant_conv", SAME), ("post_quant_conv", "post_quant_conv", SAME)]
    for coder in ("encoder", "decoder"):
        pairs += [
            (f"{coder}.conv_in", f"{coder}.conv_in", SAME),
            (f"{coder}.conv_out", f"{coder}.conv_out", SAME),
            (f"{coder}.conv_norm_out", f"{coder}.norm_out", SAME),
            (f"{coder}.mid_block.resnets.0", f"{coder}.mid.block_1", VAE_RESNET),
            (f"{coder}.mid_block.attentions.0", f"{coder}.mid.attn_1", VAE_ATTENTION),
            (f"{coder}.mid_block.resnets.1", f"{coder}.mid.block_2", VAE_RESNET),
        ]
    # LDM numbers decoder levels by resolution (up.0 = full size), diffusers by execution order.
    for level in range(levels):
        up = levels - 1 - level
        for j in range(layers):
            pairs.append((f"encoder.down_blocks.{level}.resnets.{j}", f"encoder.down.{level}.block.{j}", VAE_RESNET))
        for j in range(layers + 1):
            pairs.append((f"decoder.up_blocks.{up}.resnets.{j}", f"decoder.up.{level}.block.{j}", VAE_RESNET))
        if level < levels - 1:
            pairs.append(
                (f"encoder.down_blocks.{level}.downsamplers.0.conv", f"encoder.down.{level}.downsample.conv", SAME)
            )
        if level > 0:
            pairs.append((f"decoder.up_blocks.{up}.upsamplers.0.conv", f"decoder.up.{level}.upsample.conv", SAME))
    return pairs


def _rename(key: str, pairs: list[tuple[str, str, list | None]]) -> tuple[str, str | None]:
    """LDM name of a diffusers key (module prefix part, and LDM submodule if renamed)."""
    best = None
    for diffusers, ldm, renames in pairs:
        if key.startswith(diffusers + ".") and (best is None or len(diffusers) > len(best[0])):
            best = (diffusers, ldm, renames)
    if best is None:
        raise KeyError(f"no LDM name for diffusers key {key}")
    diffusers, ldm, renames = best
    rest = key[len(diffusers) + 1 :]
    if renames is None:
        return f"{ldm}.{rest}", None
    for inner_diffusers, inner_ldm in renames:
        if rest.startswith(inner_diffusers + "."):
            return f"{ldm}.{inner_ldm}.{rest[len(inner_diffusers) + 1:]}", inner_ldm
    raise KeyError(f"no LDM name for parameter {rest} of {diffusers}")


def diffusers_to_ldm(unet_sd: dict, vae_sd: dict, text_sd: dict, unet_config: dict, vae_config: dict) -> dict:
    """Rename (and, for the VAE attention, reshape) diffusers state dicts into one LDM state dict.

    Pure: tensors are not copied except where a reshape needs a new view.
    """
    out = {}

    def put(key, tensor):
        if key in out:
            raise KeyError(f"two tensors map to {key}")
        out[key] = tensor

    unet_pairs = unet_module_pairs(unet_config)
    for key, tensor in unet_sd.items():
        name, _ = _rename(key, unet_pairs)
        put(UNET_PREFIX + name, tensor)
    vae_pairs = vae_module_pairs(vae_config)
    for key, tensor in vae_sd.items():
        name, inner = _rename(key, vae_pairs)
        if inner in VAE_ATTENTION_CONVS and name.endswith(".weight") and tensor.dim() == 2:
            tensor = tensor.reshape(*tensor.shape, 1, 1)
        put(VAE_PREFIX + name, tensor)
    # transformers 5 drops the text_model. prefix that SD checkpoints have.
    for name, tensor in _with_text_model_prefix(text_sd).items():
        put(TEXT_ENCODER_PREFIX + name, tensor)
    return out


def _component_files(component_dir: Path) -> list[Path]:
    for variant in ("", ".fp16"):
        for stem in ("diffusion_pytorch_model", "model"):
            single = component_dir / f"{stem}{variant}.safetensors"
            if single.is_file():
                return [single]
            index = component_dir / f"{stem}{variant}.safetensors.index.json"
            if index.is_file():
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                return [component_dir / s for s in shards]
    raise FileNotFoundError(f"no safetensors weights in {component_dir}")


def read_component(pipeline_dir: Path, component: str) -> dict:
    """A component's full state dict, shards merged."""
    from safetensors.torch import load_file

    state = {}
    for path in _component_files(Path(pipeline_dir) / component):
        state.update(load_file(str(path)))
    return state


def write_single_file(pipeline_dir, out_path) -> None:
    """Read a diffusers SD pipeline folder and write its LDM single-file twin."""
    from safetensors.torch import save_file

    pipeline_dir = Path(pipeline_dir)
    unet_config = json.loads((pipeline_dir / "unet" / "config.json").read_text())
    vae_config = json.loads((pipeline_dir / "vae" / "config.json").read_text())
    ldm = diffusers_to_ldm(
        read_component(pipeline_dir, "unet"),
        read_component(pipeline_dir, "vae"),
        read_component(pipeline_dir, "text_encoder"),
        unet_config,
        vae_config,
    )
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(out_path))


def _with_text_model_prefix(state: dict) -> dict:
    return {k if k.startswith(TEXT_MODEL_PREFIX) else TEXT_MODEL_PREFIX + k: v for k, v in state.items()}


def check_against_diffusers(pipeline_dir) -> None:
    """Write the LDM twin, load it with diffusers' own single-file loader (offline, local configs)
    and require every tensor to equal the folder's. Raises AssertionError on any difference."""
    import os

    # No hub: every config comes from the folder (huggingface_hub reads this at import).
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from diffusers import StableDiffusionPipeline

    pipeline_dir = Path(pipeline_dir).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        single = Path(tmp) / "ldm.safetensors"
        write_single_file(pipeline_dir, single)
        pipe = StableDiffusionPipeline.from_single_file(
            str(single), config=str(pipeline_dir), local_files_only=True, safety_checker=None
        )
        failures = []
        for component, model in (("unet", pipe.unet), ("vae", pipe.vae), ("text_encoder", pipe.text_encoder)):
            expected = read_component(pipeline_dir, component)
            loaded = model.state_dict()
            if component == "text_encoder":
                expected, loaded = _with_text_model_prefix(expected), _with_text_model_prefix(loaded)
            # A buffer, not a weight: transformers may or may not list it.
            loaded = {k: v for k, v in loaded.items() if not k.endswith("position_ids")}
            if set(expected) != set(loaded):
                failures.append(
                    f"{component}: keys differ: only in folder {sorted(set(expected) - set(loaded))[:5]}, "
                    f"only after single-file load {sorted(set(loaded) - set(expected))[:5]}"
                )
                continue
            differing = [
                f"{component}: {key} differs (loaded {tuple(loaded[key].shape)}, folder {tuple(want.shape)})"
                for key, want in expected.items()
                if loaded[key].shape != want.shape or not torch.equal(loaded[key].to(want.dtype), want)
            ]
            failures += differing
            if not differing:
                print(f"{component}: all {len(expected)} tensors equal after diffusers single-file load")
        assert not failures, "\n".join(failures)


# The published SD 1.5 UNet and VAE configs (runwayml/stable-diffusion-v1-5), layout fields only.
SD15_UNET_CONFIG = {
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "in_channels": 4,
    "out_channels": 4,
    "sample_size": 64,
}
SD15_VAE_CONFIG = {
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "in_channels": 3,
    "out_channels": 3,
    "sample_size": 512,
}


def sd15_name_pairs() -> list[tuple[str, str]]:
    """(LDM key, diffusers key) for every SD 1.5 UNet and VAE parameter, with the LDM side made
    by `diffusers_to_ldm` and checked against diffusers' own LDM -> diffusers converter.

    The models are built on the meta device (names and shapes, no memory); each parameter is
    stood in for by a one-element tensor holding its index, so the check can follow where
    diffusers' converter puts each tensor."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG).state_dict()
        vae = AutoencoderKL(**SD15_VAE_CONFIG).state_dict()

    def stand_ins(state):
        # Keep 2-D weights 2-D (the VAE attention linears get reshaped), everything else 1-D.
        return {k: torch.full((1,) * min(v.dim(), 2) or (1,), float(i)) for i, (k, v) in enumerate(state.items())}

    unet_in, vae_in = stand_ins(unet), stand_ins(vae)
    ldm = diffusers_to_ldm(unet_in, vae_in, {}, SD15_UNET_CONFIG, SD15_VAE_CONFIG)
    back = {
        "unet": convert_ldm_unet_checkpoint(ldm, SD15_UNET_CONFIG),
        "vae": convert_ldm_vae_checkpoint(ldm, SD15_VAE_CONFIG),
    }
    by_value = {}
    for key, tensor in ldm.items():
        by_value[(key.startswith(UNET_PREFIX), float(tensor.flatten()[0]))] = key
    pairs = []
    for component, original in (("unet", unet_in), ("vae", vae_in)):
        converted = back[component]
        assert set(converted) == set(original), f"{component}: diffusers' converter gives other keys"
        for key, tensor in original.items():
            got = converted[key]
            assert got.shape == tensor.shape and torch.equal(got, tensor), f"{component}: {key} moved"
            pairs.append((by_value[(component == "unet", float(tensor[(0,) * tensor.dim()]))], key))
    return pairs


def make_tiny_pipeline(out_dir, *, levels: int = 2, layers_per_block: int = 2, in_channels: int = 4, seed: int = 0):
    """A random tiny SD pipeline (diffusers' test sizes), every parameter randomised so that a
    swapped or missing tensor shows. For development of the converter; fixtures come from
    tools/make_fixtures.py."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    channels = (32, 64, 64)[:levels]
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    unet = UNet2DConditionModel(
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        latent_channels=4,
        layers_per_block=layers_per_block,
        norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=49408,
            layer_norm_eps=1e-5,
        )
    )
    with torch.no_grad():
        for model in (unet, vae, text_encoder):
            for p in model.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
    tok_dir = Path(__file__).resolve().parent.parent / "sd-clip" / "data"  # the CLIP BPE files sd-clip embeds
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(skip_prk_steps=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out_dir))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the LDM single file of a diffusers folder")
    w.add_argument("pipeline_dir")
    w.add_argument("out_path")
    c = sub.add_parser("check", help="round-trip a folder through diffusers' single-file loader")
    c.add_argument("pipeline_dir")
    t = sub.add_parser("tiny-pipeline", help="save a random tiny SD pipeline (development only)")
    t.add_argument("out_dir")
    t.add_argument("--levels", type=int, default=2)
    t.add_argument("--layers-per-block", type=int, default=2)
    t.add_argument("--in-channels", type=int, default=4)
    t.add_argument("--seed", type=int, default=0)
    n = sub.add_parser("sd15-names", help="write SD 1.5 (LDM, diffusers) name pairs checked by diffusers")
    n.add_argument("out_path")
    args = parser.parse_args(argv)
    if args.command == "write":
        write_single_file(args.pipeline_dir, args.out_path)
    elif args.command == "sd15-names":
        pairs = sd15_name_pairs()
        header = (
            "# SD 1.5 UNet and VAE parameter names: LDM single-file key, diffusers name.\n"
            "# Written by `python tools/ldm_convert.py sd15-names`; every pair was checked against\n"
            "# diffusers' own LDM -> diffusers converter (diffusers.loaders.single_file_utils).\n"
        )
        Path(args.out_path).write_text(header + "".join(f"{a} {b}\n" for a, b in pairs))
        print(f"{len(pairs)} pairs")
    elif args.command == "check":
        check_against_diffusers(args.pipeline_dir)
    else:
        make_tiny_pipeline(
            args.out_dir,
            levels=args.levels,
            layers_per_block=args.layers_per_block,
            in_channels=args.in_channels,
            seed=args.seed,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
