"""LoRA fixtures: seeded random LoRA files in the formats SD 1.5 users bring, for both tiny pipelines,
and whole txt2img runs with them applied.

Files, fixtures/lora/<model>/<case>.safetensors (ranks 2-4, every factor random and non-zero):

  kohya_diffusers  kohya-ss / A1111 LoRA with diffusers block names (what sd-scripts writes for SD 1.x):
                   `lora_unet_<module, . -> _>.lora_down.weight` / `.lora_up.weight` / `.alpha`,
                   `lora_te_text_model_<module, . -> _>....`; alpha differs between modules. f16.
  peft             diffusers / PEFT, as `save_lora_weights` writes it: `unet.<module>.lora_A.weight` /
                   `.lora_B.weight`, `text_encoder.text_model.<module>.lora_A.weight`; no alpha tensors:
                   r and lora_alpha (!= r) per component in the safetensors metadata
                   `lora_adapter_metadata` (JSON). f16.
  locon            kohya LoCon: LoRA keys on kohya_diffusers' module kinds plus resnet conv1/conv2 (3x3:
                   down [r, in, 3, 3], up [out, r, 1, 1]), conv_shortcut (1x1), time_emb_proj and the
                   down/upsampler convs. f16.
  kohya_ldm        locon's tensors, unchanged, under the LDM (CompVis) UNet names A1111 uses
                   (`lora_unet_input_blocks_4_1_proj_in`, `lora_unet_middle_block_0_emb_layers_1`,
                   `lora_unet_output_blocks_2_2_conv`, ...), numbered from the pipeline's UNet config.
  loha             LyCORIS LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, `alpha`) on four
                   linears of the first transformer block, the first resnet's conv1 (3x3) and two
                   text-encoder modules of layer 0; one module without `alpha`. bf16.
  lokr             LyCORIS LoKr (`lokr_w1`, `lokr_w2_a`, `lokr_w2_b`, `alpha`) on the same linears; one
                   module with full `lokr_w1` and `lokr_w2` whose `alpha` (10000, the dim LyCORIS
                   stores there) must be ignored. f16.
  te_only          kohya LoRA on every text-encoder module and nothing else. f32.

A real LoRA adapts every module of its kinds; to keep the files small these spread the kinds over
the blocks (`targets_of`): every attention, resnet and text-encoder layer is touched and every kind
is used, each module with its own rank and alpha.

Scale rules: W <- W + multiplier * scale * dW, multiplier = the file's te or unet weight by component.
  kohya LoRA / LoCon: dW = (up.flatten(1) @ down.flatten(1)).reshape(W.shape), scale = alpha / rank,
      rank = down.shape[0], no alpha => 1.
  PEFT: dW the same from lora_B / lora_A, scale = lora_alpha / r of the component from the metadata
      (no metadata => 1, as diffusers does).
  LoHa: dW = ((w1_a @ w1_b) * (w2_a @ w2_b)).reshape(W.shape), scale = alpha / w1_b.shape[0], no alpha => 1.
  LoKr: dW = kron(w1, w2) with w1 = lokr_w1 or w1_a @ w1_b, w2 = lokr_w2 or w2_a @ w2_b; scale =
      alpha / rank (rank = w2_b.shape[0], else w1_b.shape[0]) when a factor is decomposed, 1 when both
      are full (LyCORIS and A1111 ignore alpha then).

Goldens: txt2img at 64x64 with generations.py's prompt, negative prompt, 10 steps, guidance 7.5 and
seed 0 (PNDM; Euler a for two_loras). The reference is diffusers (`load_lora_weights`, then
`set_adapters` with per-component weights) where diffusers 0.42.1 gets the format right (peft), else
the f32 torch merge below (`merge_file`): diffusers refuses LoHa/LoKr, maps LDM names only when given
`unet_config` (and then misplaces an upsampler), and for kohya files keeps only the most common alpha
for attention projections and text-encoder modules. Every run records diffusers against the merge
(`cross_check`), on the file itself and on a twin with one alpha everywhere, which diffusers scales right.
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import generations
from .common import load_pipeline, png_bytes_equal, tensor_stats, write_json, write_tensors

MODELS = ("tiny-sd", "tiny-sd-alt")
CASES = ("kohya_diffusers", "peft", "locon", "kohya_ldm", "loha", "lokr", "te_only")
# Seeds of the random factors; the model's offset is added so the two models' files differ.
FILE_SEEDS = {"kohya_diffusers": 1000, "locon": 2000, "peft": 3000, "loha": 4000, "lokr": 5000, "te_only": 6000}
MODEL_SEED_OFFSET = {"tiny-sd": 0, "tiny-sd-alt": 100}
# scale * dW has entries of std STRENGTH / sqrt(fan_in), W's std (N(0, 1/fan_in)) times STRENGTH:
# the image changes visibly and stays finite.
STRENGTH = 0.3
# kohya / LyCORIS alphas cycle through these, module by module.
ALPHAS = (2.0, 1.0, 0.5, 1.5, 3.0)
PEFT = {"unet": {"r": 4, "lora_alpha": 2}, "text_encoder": {"r": 2, "lora_alpha": 3}}

SEED = 0
# The runs: name -> (generations.SCHEDULERS key, [(case, text-encoder multiplier, UNet multiplier)]).
RUNS = {
    "kohya_diffusers": ("pndm", [("kohya_diffusers", 1.0, 1.0)]),
    "peft": ("pndm", [("peft", 1.0, 1.0)]),
    "locon": ("pndm", [("locon", 1.0, 1.0)]),
    "kohya_ldm": ("pndm", [("kohya_ldm", 1.0, 1.0)]),  # same weights as locon: same latents, bit for bit
    "loha": ("pndm", [("loha", 1.0, 1.0)]),
    "lokr": ("pndm", [("lokr", 1.0, 1.0)]),
    "te_only": ("pndm", [("te_only", 1.0, 1.0)]),
    # A1111's <lora:kohya_diffusers:1.5:0.6>: text encoder 1.5, UNet 0.6.
    "split_te_unet": ("pndm", [("kohya_diffusers", 1.5, 0.6)]),
    "two_loras": ("euler_ancestral", [("kohya_diffusers", 0.8, 0.8), ("locon", 1.0, 0.5)]),
    # Multiplier 0 gives generations' txt2img/pndm/seed0 back, bit for bit.
    "multiplier_0": ("pndm", [("kohya_diffusers", 0.0, 0.0)]),
}
# What diffusers 0.42.1 scales right itself (the golden's reference), and what it loads at all.
DIFFUSERS_CORRECT = {"peft"}
DIFFUSERS_LOADS = DIFFUSERS_CORRECT | {"kohya_diffusers", "locon", "kohya_ldm", "te_only"}
TWIN_ALPHA = 2.0

ATTENTION_KINDS = tuple(
    f"transformer_blocks.0.{kind}"
    for kind in (
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
        "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
        "ff.net.0.proj", "ff.net.2",
    )
) + ("proj_in", "proj_out")
RESNET_KINDS = ("conv1", "conv2", "time_emb_proj", "conv_shortcut")
TE_KINDS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
ANY = re.compile(".")
TEXT_ENCODER = re.compile(r"layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")


# ---------------------------------------------------------------------------------------------
# Module names


def layers(module, pattern=ANY):
    """(name, module) of the Linear/Conv2d modules whose name matches, in registration order."""
    return [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and pattern.search(name)
    ]


def te_model_path(name):
    """A text-encoder module as transformers 4 named it, and LoRA files do: `text_model.` first.
    transformers 5's CLIPTextModel has no `text_model` level (diffusers strips it when loading)."""
    return name if name.startswith("text_model.") else f"text_model.{name}"


def kohya_name(component, name):
    """kohya's module name: `lora_unet_` / `lora_te_` and the module path with `_` for `.`."""
    if component == "unet":
        return "lora_unet_" + name.replace(".", "_")
    return "lora_te_" + te_model_path(name).replace(".", "_")


# Inside a UNet ResBlock, LDM names the layers by their index in Sequentials.
RESNET_RENAMES = {
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def ldm_unet_modules(config):
    """diffusers UNet module prefix -> (LDM prefix, is a ResBlock), from the UNet config: the rules of
    sd-core/src/weights/ldm.rs (`unet_rules`). After conv_in (input_blocks.0) each down level has
    one input block per resnet (resnet at .0, attention at .1) and one for its downsampler (.0.op),
    the last level none; the up levels, deepest first, have one output block per resnet (one more
    than on the way down), the level's last also holding the upsampler after the attention, if any."""
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    per_level = list(per_level) if isinstance(per_level, (list, tuple)) else [per_level] * levels
    down_attention = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    up_attention = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    rules = {
        "mid_block.resnets.0": ("middle_block.0", True),
        "mid_block.attentions.0": ("middle_block.1", False),
        "mid_block.resnets.1": ("middle_block.2", True),
    }
    block = 1
    for level in range(levels):
        for j in range(per_level[level]):
            rules[f"down_blocks.{level}.resnets.{j}"] = (f"input_blocks.{block}.0", True)
            if down_attention[level]:
                rules[f"down_blocks.{level}.attentions.{j}"] = (f"input_blocks.{block}.1", False)
            block += 1
        if level + 1 < levels:
            rules[f"down_blocks.{level}.downsamplers.0.conv"] = (f"input_blocks.{block}.0.op", False)
            block += 1
    block = 0
    for up in range(levels):
        resnets = per_level[levels - 1 - up] + 1
        for j in range(resnets):
            rules[f"up_blocks.{up}.resnets.{j}"] = (f"output_blocks.{block}.0", True)
            if up_attention[up]:
                rules[f"up_blocks.{up}.attentions.{j}"] = (f"output_blocks.{block}.1", False)
            if j + 1 == resnets and up + 1 < levels:
                slot = 2 if up_attention[up] else 1
                rules[f"up_blocks.{up}.upsamplers.0.conv"] = (f"output_blocks.{block}.{slot}.conv", False)
            block += 1
    return rules


def ldm_name(rules, name):
    """The LDM name of a diffusers UNet module (by the longest matching rule), or None."""
    for prefix in sorted(rules, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            ldm, resnet = rules[prefix]
            rest = name[len(prefix) + 1 :]
            if resnet:
                rest = RESNET_RENAMES[rest]
            return f"{ldm}.{rest}" if rest else ldm
    return None


def module_table(pipe):
    """Every module name a LoRA file may use -> (component, diffusers module path): kohya names with
    diffusers and with LDM UNet blocks, as A1111 accepts both, and PEFT's `unet.<path>` /
    `text_encoder.text_model.<path>`. Built from a pipeline without adapters."""
    table = {}
    rules = ldm_unet_modules(pipe.unet.config)
    for name, _ in layers(pipe.unet):
        table[kohya_name("unet", name)] = ("unet", name)
        table[f"unet.{name}"] = ("unet", name)
        ldm = ldm_name(rules, name)
        if ldm is not None:
            table["lora_unet_" + ldm.replace(".", "_")] = ("unet", name)
    for name, _ in layers(pipe.text_encoder):
        table[kohya_name("text_encoder", name)] = ("text_encoder", name)
        table[f"text_encoder.{te_model_path(name)}"] = ("text_encoder", name)
    return table


# ---------------------------------------------------------------------------------------------
# Which modules


def ordered_groups(modules, pattern):
    """The distinct prefixes `pattern` captures from the module names, in model order."""
    groups = []
    for name in modules:
        match = re.match(pattern, name)
        if match and match.group(1) not in groups:
            groups.append(match.group(1))
    return groups


def spread(groups, kinds, available):
    """Module names `<group>.<kind>`: each group (in model order) takes its least-used available
    kinds, an even share of them, so every group gets one or more and every kind is used."""
    uses = dict.fromkeys(kinds, 0)
    per_group = -(-len(kinds) // len(groups))
    chosen = []
    for group in groups:
        options = sorted((k for k in kinds if f"{group}.{k}" in available), key=lambda k: uses[k])
        for kind in options[:per_group]:
            uses[kind] += 1
            chosen.append(f"{group}.{kind}")
    unused = [k for k, n in uses.items() if n == 0 and any(a.endswith("." + k) for a in available)]
    if unused:
        raise RuntimeError(f"kinds left out: {unused}")
    return chosen


def targets_of(pipe, unet=None, te="spread"):
    """(component, name, module) to adapt: unet="attention" spreads the 12 attention kinds over the
    attentions (`attentions.N`), unet="convs" also the 4 resnet kinds over the resnets and adds every
    down/upsampler conv; te="spread" spreads q/k/v/out_proj, fc1/fc2 over the text-encoder layers,
    te="all" takes all of them, te=None none."""
    out = []
    if unet is not None:
        modules = dict(layers(pipe.unet))
        names = spread(ordered_groups(modules, r"(.*\.attentions\.\d+)\."), ATTENTION_KINDS, modules)
        if unet == "convs":
            names += spread(ordered_groups(modules, r"(.*\.resnets\.\d+)\."), RESNET_KINDS, modules)
            names += [n for n in modules if n.endswith("samplers.0.conv")]
        out += [("unet", n, m) for n, m in modules.items() if n in names]
    if te is not None:
        modules = dict(layers(pipe.text_encoder, TEXT_ENCODER))
        if te == "all":
            names = list(modules)
        else:
            names = spread(ordered_groups(modules, r"(.*\.layers\.\d+)\."), TE_KINDS, modules)
        out += [("text_encoder", n, m) for n, m in modules.items() if n in names]
    return out


def lycoris_targets(pipe):
    """LoHa/LoKr modules: attn1.to_q, attn2.to_k, attn2.to_out.0 and ff.net.0.proj of the first
    transformer block, text-encoder layer 0's q_proj and mlp.fc1, and (conv) the first resnet's conv1."""
    unet = dict(layers(pipe.unet))
    block = next(n for n in unet if n.endswith("transformer_blocks.0.attn1.to_q")).removesuffix(".attn1.to_q")
    linears = [("unet", f"{block}.{k}") for k in ("attn1.to_q", "attn2.to_k", "attn2.to_out.0", "ff.net.0.proj")]
    linears += [("text_encoder", f"encoder.layers.0.{k}") for k in ("self_attn.q_proj", "mlp.fc1")]
    conv = next(n for n in unet if n.endswith("resnets.0.conv1"))
    module = lambda component, name: (component, name, getattr(pipe, component).get_submodule(name))  # noqa: E731
    return [module(c, n) for c, n in linears], module("unet", conv)


# ---------------------------------------------------------------------------------------------
# Random factors


def randn(shape, std, gen):
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std


def fan_in(weight):
    return weight[0].numel()


def lora_factors(weight, rank, alpha, gen):
    """down [r, in, kh, kw] / up [out, r, 1, 1] (linear: [r, in] / [out, r]) such that
    alpha / rank * up @ down has entries of std STRENGTH / sqrt(fan_in)."""
    scale = alpha / rank
    out_ch, in_ch = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    down = randn((rank, in_ch, *kernel), fan_in(weight) ** -0.5, gen)
    up = randn((out_ch, rank, *((1,) * len(kernel))), STRENGTH / (rank**0.5 * scale), gen)
    return down, up


def rank_of(name, module):
    """Ranks 2-4 by module kind (as resized / dynamic-rank files have them); 2 for 3x3 convs."""
    if isinstance(module, torch.nn.Conv2d) and module.kernel_size != (1, 1):
        return 2
    if name.endswith(("to_q", "q_proj")):
        return 4
    if name.endswith(("to_v", "v_proj", "proj_in")):
        return 3
    return 2


def factorization(dim):
    """LyCORIS' default split (factor -1): dim = m * n, m <= n, m as close to sqrt(dim) as divides."""
    m = int(dim**0.5)
    while dim % m:
        m -= 1
    return m, dim // m


# ---------------------------------------------------------------------------------------------
# Writing the files


def sorted_metadata(path):
    """Rewrite a safetensors file with its `__metadata__` keys sorted: safetensors writes them in
    hash-map order, which changes from process to process; sorted, reruns are byte-identical."""
    with open(path, "rb") as f:
        data = f.read()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (size - len(text))  # the header's padding to 8 bytes
    if len(text) != size:
        raise RuntimeError(f"{path}: the header changed length")
    with open(path, "wb") as f:
        f.write(data[:8] + text + data[8 + size :])


def save(tensors, path, metadata):
    save_file(tensors, path, metadata=metadata)
    sorted_metadata(path)


def kohya_metadata(algo=None):
    """The two metadata entries of kohya / LyCORIS files that name the network type."""
    if algo is None:
        return {"ss_network_module": "networks.lora"}
    return {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": algo})}


def kohya_lora(targets, gen, dtype, alpha_offset=0):
    """kohya LoRA tensors for the targets: lora_down, lora_up and a scalar alpha per module."""
    tensors = {}
    for i, (component, name, module) in enumerate(targets):
        rank = rank_of(name, module)
        alpha = ALPHAS[(i + alpha_offset) % len(ALPHAS)]
        down, up = lora_factors(module.weight, rank, alpha, gen)
        key = kohya_name(component, name)
        tensors[f"{key}.lora_down.weight"] = down.to(dtype)
        tensors[f"{key}.lora_up.weight"] = up.to(dtype)
        tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=dtype)
    return tensors


def write_kohya_diffusers(pipe, path, gen):
    save(kohya_lora(targets_of(pipe, "attention"), gen, torch.float16), path, kohya_metadata())


def write_te_only(pipe, path, gen):
    save(kohya_lora(targets_of(pipe, None, te="all"), gen, torch.float32, alpha_offset=2), path, kohya_metadata())


def write_locon(pipe, path, gen):
    save(kohya_lora(targets_of(pipe, "convs"), gen, torch.float16, alpha_offset=1), path, kohya_metadata("locon"))


def write_kohya_ldm(pipe, locon_path, path):
    """locon's tensors under LDM UNet names (text-encoder names are the same in both layouts)."""
    rules = ldm_unet_modules(pipe.unet.config)
    renames = {}
    for name, _ in layers(pipe.unet):
        ldm = ldm_name(rules, name)
        if ldm is not None:
            renames[kohya_name("unet", name)] = "lora_unet_" + ldm.replace(".", "_")
    out = {}
    for key, value in load_file(locon_path).items():
        module, suffix = key.split(".", 1)
        out[f"{renames.get(module, module)}.{suffix}"] = value
    save(out, path, kohya_metadata("locon"))


def write_peft(pipe, path, gen):
    """What `StableDiffusionPipeline.save_lora_weights(..., unet_lora_adapter_metadata=...,
    text_encoder_lora_adapter_metadata=...)` writes. Text-encoder keys carry `text_model.` as under
    transformers 4 (the files in the wild). target_modules are the adapted modules' names, the text
    encoder's without `text_model.` (PEFT matches them as suffixes under either transformers),
    sorted: LoraConfig.to_dict() would give a set, in hash order."""
    state = {"unet": {}, "text_encoder": {}}
    for component, name, module in targets_of(pipe, "attention"):
        down, up = lora_factors(module.weight, PEFT[component]["r"], PEFT[component]["lora_alpha"], gen)
        key = name if component == "unet" else te_model_path(name)
        state[component][f"{key}.lora_A.weight"] = down.to(torch.float16)
        state[component][f"{key}.lora_B.weight"] = up.to(torch.float16)
    metadata = {
        component: {
            **PEFT[component],
            "target_modules": sorted(
                k.removesuffix(".lora_A.weight").removeprefix("text_model.")
                for k in keys
                if k.endswith(".lora_A.weight")
            ),
            "init_lora_weights": "gaussian",
        }
        for component, keys in state.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp,
            unet_lora_layers=state["unet"],
            text_encoder_lora_layers=state["text_encoder"],
            unet_lora_adapter_metadata=metadata["unet"],
            text_encoder_lora_adapter_metadata=metadata["text_encoder"],
            weight_name="lora.safetensors",
        )
        shutil.move(os.path.join(tmp, "lora.safetensors"), path)
    sorted_metadata(path)


def write_loha(pipe, path, gen):
    linears, conv = lycoris_targets(pipe)
    tensors = {}
    for i, (component, name, module) in enumerate(linears + [conv]):
        rank = (4, 2, 3)[i % 3]
        alpha = None if i == 1 else ALPHAS[i % len(ALPHAS)]  # no alpha: scale 1
        scale = 1.0 if alpha is None else alpha / rank
        out_ch, cols = module.weight.shape[0], fan_in(module.weight)
        key = kohya_name(component, name)
        # w1_a @ w1_b before w1_a's factor and w2_a @ w2_b have unit-variance entries.
        tensors[f"{key}.hada_w1_a"] = randn((out_ch, rank), STRENGTH / (scale * cols**0.5), gen)
        tensors[f"{key}.hada_w1_b"] = randn((rank, cols), rank**-0.5, gen)
        tensors[f"{key}.hada_w2_a"] = randn((out_ch, rank), 1.0, gen)
        tensors[f"{key}.hada_w2_b"] = randn((rank, cols), rank**-0.5, gen)
        if alpha is not None:
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save({k: v.to(torch.bfloat16) for k, v in tensors.items()}, path, kohya_metadata("loha"))


def write_lokr(pipe, path, gen):
    linears, _ = lycoris_targets(pipe)
    tensors = {}
    for i, (component, name, module) in enumerate(linears):
        (out_l, out_k), (in_m, in_n) = (factorization(d) for d in module.weight.shape)
        full = i == 2  # lokr_w1 and lokr_w2 both full: scale 1, whatever alpha says
        rank = (4, 2, 3)[i % 3]
        alpha = 10000.0 if full else ALPHAS[i % len(ALPHAS)]  # LyCORIS stores its dim as a full module's alpha
        scale = 1.0 if full else alpha / rank
        key = kohya_name(component, name)
        # kron(w1, w2) before w1's factor has unit-variance entries.
        tensors[f"{key}.lokr_w1"] = randn((out_l, in_m), STRENGTH / (scale * module.weight.shape[1] ** 0.5), gen)
        if full:
            tensors[f"{key}.lokr_w2"] = randn((out_k, in_n), 1.0, gen)
        else:
            tensors[f"{key}.lokr_w2_a"] = randn((out_k, rank), 1.0, gen)
            tensors[f"{key}.lokr_w2_b"] = randn((rank, in_n), rank**-0.5, gen)
        tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save({k: v.to(torch.float16) for k, v in tensors.items()}, path, kohya_metadata("lokr"))


def write_files(fixtures_dir, model, pipe):
    """fixtures/lora/<model>/<case>.safetensors for every case; returns case -> path."""
    out_dir = os.path.join(fixtures_dir, "lora", model)
    os.makedirs(out_dir, exist_ok=True)
    paths = {case: os.path.join(out_dir, f"{case}.safetensors") for case in CASES}
    writers = {
        "kohya_diffusers": write_kohya_diffusers,
        "peft": write_peft,
        "locon": write_locon,
        "loha": write_loha,
        "lokr": write_lokr,
        "te_only": write_te_only,
    }
    for case, writer in writers.items():
        writer(pipe, paths[case], torch.Generator("cpu").manual_seed(FILE_SEEDS[case] + MODEL_SEED_OFFSET[model]))
    write_kohya_ldm(pipe, paths["locon"], paths["kohya_ldm"])
    return paths


# ---------------------------------------------------------------------------------------------
# The torch merge (the reference where diffusers does not get a format right)


def split_key(key):
    """(module, suffix): kohya / LyCORIS `<module>.<suffix>`; PEFT `<component>.<path>.lora_A.weight`."""
    for suffix in ("lora_A.weight", "lora_B.weight"):
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    module, suffix = key.split(".", 1)
    return module, suffix


def read_lora(path):
    """{module: {suffix: f32 tensor}} and the safetensors metadata of a LoRA file."""
    modules = {}
    for key, value in load_file(path).items():
        module, suffix = split_key(key)
        modules.setdefault(module, {})[suffix] = value.to(torch.float32)
    with safe_open(path, "pt") as f:
        metadata = f.metadata() or {}
    return modules, metadata


def peft_scales(metadata):
    """PEFT: lora_alpha / r per component, from diffusers' `lora_adapter_metadata`."""
    config = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    return {c: config[f"{c}.lora_alpha"] / config[f"{c}.r"] for c in ("unet", "text_encoder") if f"{c}.r" in config}


def alpha_scale(parts, rank):
    """kohya / LyCORIS: alpha / rank; 1 (alpha = rank) when the module has no alpha."""
    return parts["alpha"].item() / rank if "alpha" in parts else 1.0


def delta(parts, shape, peft_scale=1.0):
    """(dW, scale) of one module from its f32 tensors (suffix -> tensor), dW shaped like W."""
    if "lora_down.weight" in parts:  # kohya LoRA / LoCon
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        return (up.flatten(1) @ down.flatten(1)).reshape(shape), alpha_scale(parts, down.shape[0])
    if "lora_A.weight" in parts:  # PEFT
        down, up = parts["lora_A.weight"], parts["lora_B.weight"]
        return (up.flatten(1) @ down.flatten(1)).reshape(shape), peft_scale
    if "hada_w1_a" in parts:  # LoHa
        w1 = parts["hada_w1_a"] @ parts["hada_w1_b"]
        w2 = parts["hada_w2_a"] @ parts["hada_w2_b"]
        return (w1 * w2).reshape(shape), alpha_scale(parts, parts["hada_w1_b"].shape[0])
    if "lokr_w1" in parts or "lokr_w1_a" in parts:  # LoKr
        w1 = parts["lokr_w1"] if "lokr_w1" in parts else parts["lokr_w1_a"] @ parts["lokr_w1_b"]
        w2 = parts["lokr_w2"] if "lokr_w2" in parts else parts["lokr_w2_a"] @ parts["lokr_w2_b"]
        if "lokr_w2_b" in parts:
            scale = alpha_scale(parts, parts["lokr_w2_b"].shape[0])
        elif "lokr_w1_b" in parts:
            scale = alpha_scale(parts, parts["lokr_w1_b"].shape[0])
        else:
            scale = 1.0
        return torch.kron(w1, w2).reshape(shape), scale
    raise ValueError(f"unknown LoRA module layout: {sorted(parts)}")


def merge_file(pipe, table, path, te, unet):
    """W <- W + multiplier * scale * dW for every module of the file, in f32, in place."""
    modules, metadata = read_lora(path)
    scales = peft_scales(metadata)
    multiplier = {"text_encoder": te, "unet": unet}
    with torch.no_grad():
        for module_name, parts in modules.items():
            component, name = table[module_name]
            weight = getattr(pipe, component).get_submodule(name).weight
            d, scale = delta(parts, weight.shape, scales.get(component, 1.0))
            weight += (multiplier[component] * scale) * d


def merged_pipe(model_dir, table, loras, files):
    pipe = load_pipeline(StableDiffusionPipeline, model_dir)
    for case, te, unet in loras:
        merge_file(pipe, table, files[case], te, unet)
    return pipe


# ---------------------------------------------------------------------------------------------
# diffusers, and the cross-checks


def adapter_name(i, case):
    return f"{case}_{i}"


def diffusers_pipe(model_dir, loras, files):
    """diffusers' own loading: one adapter per file, then set_adapters with per-component weights.
    LDM names need `unet_config` (diffusers maps them only when given it)."""
    pipe = load_pipeline(StableDiffusionPipeline, model_dir)
    for i, (case, _, _) in enumerate(loras):
        kwargs = {"unet_config": pipe.unet.config} if case == "kohya_ldm" else {}
        pipe.load_lora_weights(files[case], adapter_name=adapter_name(i, case), **kwargs)
    present = pipe.get_list_adapters()  # component -> adapters (te_only has no UNet part)
    names = [adapter_name(i, case) for i, (case, _, _) in enumerate(loras)]
    weights = [
        {c: w for c, w in (("text_encoder", te), ("unet", unet)) if name in present.get(c, [])}
        for name, (_, te, unet) in zip(names, loras)
    ]
    pipe.set_adapters(names, adapter_weights=weights)
    return pipe


def check_scales(pipe, table, loras, files):
    """The largest difference between the scaling diffusers gave each adapted module
    (weight * lora_alpha / r) and multiplier * scale by the rules above, and the modules of the
    files diffusers did not adapt."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    worst, missing = 0.0, []
    for i, (case, te, unet) in enumerate(loras):
        name = adapter_name(i, case)
        modules, metadata = read_lora(files[case])
        scales = peft_scales(metadata)
        multiplier = {"text_encoder": te, "unet": unet}
        for module_name, parts in modules.items():
            component, path = table[module_name]
            module = getattr(pipe, component).get_submodule(path)
            if not isinstance(module, BaseTunerLayer) or name not in module.scaling:
                missing.append(f"{component}.{path}")
                continue
            _, scale = delta(parts, module.get_base_layer().weight.shape, scales.get(component, 1.0))
            worst = max(worst, abs(module.scaling[name] - multiplier[component] * scale))
    return worst, missing


def uniform_alpha_twin(path, out_path):
    """The file with every `.alpha` set to TWIN_ALPHA, which diffusers scales right."""
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    for key, value in tensors.items():
        if key.endswith(".alpha"):
            tensors[key] = torch.tensor(TWIN_ALPHA, dtype=value.dtype)
    save(tensors, out_path, metadata)


def compare(pipe, reference, model, sampler):
    """Max |latents - reference latents| of the same run, and that relative to max |latents|."""
    a = run(pipe, model, sampler)[1]
    b = run(reference, model, sampler)[1]
    diff = (a - b).abs().max().item()
    relative = diff / a.abs().max().item()
    return {"latents_max_abs_diff": float(f"{diff:.3g}"), "relative_to_max_abs": float(f"{relative:.3g}")}


def diffusers_against_merge(model_dir, model, table, sampler, loras, files):
    pipe = diffusers_pipe(model_dir, loras, files)
    worst, missing = check_scales(pipe, table, loras, files)
    return {
        "scaling_max_abs_diff": float(f"{worst:.3g}"),
        **({"modules_not_adapted": missing} if missing else {}),
        **compare(pipe, merged_pipe(model_dir, table, loras, files), model, sampler),
    }


def cross_checks(model_dir, model, table, sampler, loras, files, tmp):
    """diffusers against the torch merge on the run's files and, for kohya files (whose alphas
    diffusers mis-scales), on their uniform-alpha twins: these check the merge and the multipliers."""
    cases = {case for case, _, _ in loras}
    if not cases <= DIFFUSERS_LOADS:
        try:
            diffusers_pipe(model_dir, loras, files)
        except ValueError as error:
            message = " ".join(str(error).split())
            return {"diffusers_refuses": f"{type(error).__name__}: {message[:150]}..."}
        raise RuntimeError(f"diffusers now loads {cases}: check it against the merge")
    out = {"diffusers_on_this_file": diffusers_against_merge(model_dir, model, table, sampler, loras, files)}
    if not cases <= DIFFUSERS_CORRECT:
        twins = {case: os.path.join(tmp, f"{model}-{case}.safetensors") for case in cases}
        for case in cases:
            uniform_alpha_twin(files[case], twins[case])
        out["uniform_alpha_twin"] = {
            "alpha": TWIN_ALPHA,
            **diffusers_against_merge(model_dir, model, table, sampler, loras, twins),
        }
    return out


# ---------------------------------------------------------------------------------------------
# The goldens


def run(pipe, model, sampler):
    """generations.py's txt2img call: (params, latents, PIL image, scheduler details)."""
    params = dict(generations.common_params(), height=generations.SIZE, width=generations.SIZE, seed=SEED)
    latents, images, extra = generations.txt2img(pipe, model, sampler, params)
    return params, latents, images[0], extra


def file_summary(path):
    """dtype, tensor and module counts, an example key (UNet first) and the metadata of a LoRA file."""
    tensors = load_file(path)
    modules, metadata = read_lora(path)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for k, t in tensors.items() if not k.endswith(".alpha")})
    firsts = [k for k in sorted(tensors) if k.endswith(("lora_down.weight", "lora_A.weight", "hada_w1_a", "lokr_w1"))]
    unet = [k for k in firsts if k.startswith(("lora_unet_", "unet."))]
    return {
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "tensors": len(tensors),
        "modules": len(modules),
        "example_key": (unet or firsts)[0],
        "metadata": dict(sorted(metadata.items())),
    }


def no_lora_runs(base, model, out_dir):
    """The runs without LoRA, checked against what generations.py wrote for the same call:
    sampler -> (generations run key, latents, image as float array)."""
    committed = load_file(os.path.join(out_dir, "generations.safetensors"))
    runs = {}
    for sampler in ("pndm", "euler_ancestral"):
        _, latents, image, _ = run(base, model, sampler)
        key = f"txt2img/{sampler}/seed{SEED}"
        png = Image.open(os.path.join(out_dir, f"{key.replace('/', '_')}.png"))
        if not torch.equal(committed[f"{key}/latents"], latents) or not png_bytes_equal(png, image):
            raise RuntimeError(f"{model}: the run without LoRA differs from generations' {key}")
        runs[sampler] = (key, latents, np.asarray(image, dtype=np.float64))
    return runs


def write_goldens(fixtures_dir, goldens_dir):
    runs, files_json = {}, {}
    for model in MODELS:
        model_dir = os.path.join(fixtures_dir, model)
        out_dir = os.path.join(goldens_dir, model)
        base = load_pipeline(StableDiffusionPipeline, model_dir)
        table = module_table(base)
        files = write_files(fixtures_dir, model, base)
        files_json[model] = {
            case: {"file": f"lora/{model}/{case}.safetensors", **file_summary(path)} for case, path in files.items()
        }
        no_lora = no_lora_runs(base, model, out_dir)
        tensors = {}
        runs[model] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for key, (sampler, loras) in RUNS.items():
                reference = "diffusers" if {case for case, _, _ in loras} <= DIFFUSERS_CORRECT else "torch-merge"
                if reference == "diffusers":
                    pipe = diffusers_pipe(model_dir, loras, files)
                else:
                    pipe = merged_pipe(model_dir, table, loras, files)
                params, latents, image, extra = run(pipe, model, sampler)
                no_lora_key, no_lora_latents, no_lora_image = no_lora[sampler]
                changed = (latents - no_lora_latents).abs().max().item()
                pixels = float(np.abs(np.asarray(image, dtype=np.float64) - no_lora_image).mean())
                # Where the golden is stored; kohya_ldm and multiplier_0 point at identical ones.
                stored = {"latents_file": "lora.safetensors", "latents_key": f"{key}/latents", "png": f"lora_{key}.png"}
                if key == "multiplier_0":
                    if not torch.equal(latents, no_lora_latents) or pixels != 0:
                        raise RuntimeError(f"{model}: multiplier 0 differs from the run without LoRA")
                    stored = {
                        "latents_file": "generations.safetensors",
                        "latents_key": f"{no_lora_key}/latents",
                        "png": f"{no_lora_key.replace('/', '_')}.png",
                    }
                elif key == "kohya_ldm":
                    if not torch.equal(latents, tensors["locon/latents"]):
                        raise RuntimeError(f"{model}: kohya_ldm (locon under LDM names) differs from locon")
                    stored = dict(stored, latents_key="locon/latents", png="lora_locon.png")
                else:
                    if not (changed > 1.0 and pixels > 5.0 and torch.isfinite(latents).all()):
                        raise RuntimeError(f"{model} {key}: the LoRA barely changes the image ({changed}, {pixels})")
                    tensors[stored["latents_key"]] = latents
                    generations.save_png(image, os.path.join(out_dir, stored["png"]))
                checks = cross_checks(model_dir, model, table, sampler, loras, files, tmp)
                runs[model][key] = {
                    "loras": [
                        {"file": f"lora/{model}/{case}.safetensors", "te": te, "unet": unet} for case, te, unet in loras
                    ],
                    "reference": reference,
                    "pipeline": "StableDiffusionPipeline",
                    "model": model,
                    **params,
                    "generator": generations.generator_repr(params["seed"]),
                    "scheduler": extra["scheduler"],
                    "sampler": extra["sampler"],
                    **stored,
                    "latents": tensor_stats(latents),
                    "no_lora_run": f"generations.json {no_lora_key}",
                    "vs_no_lora": {"latents_max_abs_diff": round(changed, 4), "png_mean_abs_diff": round(pixels, 3)},
                    "cross_check": checks,
                }
                print(f"{model} {key}: {reference}; against no LoRA: latents {changed:.3g}, pixels {pixels:.3g}")
                for name, check in checks.items():
                    print(f"    {name}: {json.dumps(check)}")
        write_tensors(os.path.join(out_dir, "lora.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "lora.json"),
        {"description": DESCRIPTION, "cases": CASE_NOTES, "files": files_json, "runs": runs},
    )


CASE_NOTES = {
    "kohya_diffusers": {
        "format": "kohya-ss / A1111 LoRA with diffusers block names: lora_unet_<module, . -> _>.{lora_down.weight "
        "[r, in(, kh, kw)], lora_up.weight [out, r(, 1, 1)], alpha (scalar)}, lora_te_text_model_<module>.{...}; "
        "rank and alpha differ between modules",
        "scale": "alpha / rank, rank = lora_down.shape[0]; no alpha => 1",
        "delta": "(lora_up.flatten(1) @ lora_down.flatten(1)).reshape(W.shape) (tiny-sd's proj_in/out are 1x1 convs)",
    },
    "peft": {
        "format": "diffusers / PEFT (save_lora_weights): unet.<module>.lora_A.weight [r, in(, 1, 1)], .lora_B.weight "
        "[out, r(, 1, 1)], text_encoder.text_model.<module>.lora_{A,B}.weight; no alpha tensors; safetensors metadata "
        "'lora_adapter_metadata' = JSON with 'unet.r', 'unet.lora_alpha', 'unet.target_modules', 'text_encoder.r', ...",
        "scale": "lora_alpha / r of the component from the metadata: UNet 2 / 4 = 0.5, text encoder 3 / 2 = 1.5 "
        "(without metadata diffusers uses 1)",
        "delta": "(lora_B.flatten(1) @ lora_A.flatten(1)).reshape(W.shape)",
    },
    "locon": {
        "format": "kohya LoCon (ss_network_module lycoris.kohya, algo locon), LoRA keys: kohya_diffusers' kinds plus "
        "resnet conv1/conv2 (3x3: lora_down [r, in, 3, 3], lora_up [out, r, 1, 1]), conv_shortcut (1x1), time_emb_proj "
        "and the down/upsampler convs (3x3)",
        "scale": "as kohya_diffusers",
        "delta": "(lora_up.flatten(1) @ lora_down.flatten(1)).reshape(out, in, kh, kw)",
    },
    "kohya_ldm": {
        "format": "locon's tensors, unchanged, under the LDM UNet names A1111 uses: lora_unet_input_blocks_N_{0|1}_..., "
        "lora_unet_middle_block_{0|1|2}_..., lora_unet_output_blocks_N_{0|1}_..., resnet layers as in_layers_2 / "
        "emb_layers_1 / out_layers_3 / skip_connection, samplers as input_blocks_N_0_op / output_blocks_N_{1|2}_conv, "
        "numbered from the UNet config as sd-core's ldm.rs does; text encoder as kohya_diffusers",
        "scale": "as kohya_diffusers",
        "delta": "as locon; loaded, it gives locon's weights, so its golden is locon's",
    },
    "loha": {
        "format": "LyCORIS LoHa: <kohya module>.{hada_w1_a [out, r], hada_w1_b [r, in*kh*kw], hada_w2_a, hada_w2_b, "
        "alpha}; one module without alpha; one 3x3 conv",
        "scale": "alpha / rank, rank = hada_w1_b.shape[0]; no alpha => 1",
        "delta": "((hada_w1_a @ hada_w1_b) * (hada_w2_a @ hada_w2_b)).reshape(W.shape)",
    },
    "lokr": {
        "format": "LyCORIS LoKr: <kohya module>.{lokr_w1 [a, b], lokr_w2_a [c, r], lokr_w2_b [r, d], alpha}, W is "
        "[a*c, b*d]; one module (the first transformer block's attn2.to_out.0) with full lokr_w1 and lokr_w2 and "
        "alpha 10000 (LyCORIS stores its dim there)",
        "scale": "alpha / rank (rank = lokr_w2_b.shape[0], else lokr_w1_b.shape[0]) when a factor is decomposed; 1 when "
        "both are full, whatever alpha says",
        "delta": "kron(w1, w2).reshape(W.shape), w1 = lokr_w1 or lokr_w1_a @ lokr_w1_b, w2 = lokr_w2 or "
        "lokr_w2_a @ lokr_w2_b",
    },
    "te_only": {
        "format": "kohya LoRA on every text-encoder module, no UNet keys",
        "scale": "as kohya_diffusers",
        "delta": "as kohya_diffusers",
    },
}

DESCRIPTION = (
    "LoRA goldens, written by tools/fixturegen/lora.py: txt2img runs of the tiny pipelines with LoRA files applied, "
    "in f32 on CPU from the committed f16 weights. `files`: the LoRA files (paths relative to fixtures/), "
    "`cases`: their formats, scale and delta rules. In each run, `loras` lists files with their text-encoder and UNet "
    "multipliers (A1111's <lora:name:te:unet>): W + sum over files of multiplier(component) * scale * delta. The "
    "final latents (output_type='latent') are `latents_key` in <model>/`latents_file`, the output_type='pil' image of "
    "an identical second call is <model>/`png` (kohya_ldm points at locon's, multiplier_0 at generations.json's run "
    "without LoRA: identical bit for bit). Prompt, negative prompt, steps, guidance, seed and `sampler` (the name "
    "sd_schedulers::scheduler_from_name takes) as in generations.json. `reference`: 'diffusers' = "
    "load_lora_weights + set_adapters(names, adapter_weights=[{'text_encoder': te, 'unet': unet}]) (unmerged PEFT "
    "layers); 'torch-merge' = the weights merged in f32 by the rules of `cases` (kohya / A1111 / LyCORIS). Every "
    "kohya-format golden is a torch merge: diffusers 0.42.1 keeps the most common alpha for kohya attention "
    "projections and text-encoder modules (its alpha_pattern keys, e.g. '...attn1.processor.to_q_lora.down.weight' "
    "or 'text_model.encoder.layers.0.self_attn', match no module), refuses LoHa and LoKr, and maps LDM names only "
    "with unet_config=pipe.unet.config, then putting tiny-sd-alt's output_blocks.N.1.conv (the upsampler of an "
    "UpBlock2D) into attentions and dropping it. cross_check.diffusers_on_this_file: diffusers on the run's files "
    "against the merge (scaling = multiplier * scale per module); cross_check.uniform_alpha_twin: the same with every "
    "alpha set to 2, which diffusers scales right (~2e-6 relative: checks the merge and the multipliers). "
    "Tolerances as for generations.json: compare whole runs relatively."
)
