#!/usr/bin/env python3
"""Full-size SD 1.5 text-encoder golden, made on demand (not committed: ~250 MB of weights).

A transformers CLIPTextModel with SD 1.5's text_encoder/config.json (CLIP ViT-L/14: 768 wide,
12 layers, 12 heads, MLP 3072, quick_gelu), every parameter randomised as the committed fixtures
are (fixturegen.pipelines.randomise_parameters), stored in f16; the goldens are computed in f32 from
the f16 values. Run from the repository root with the pinned reference environment:

    python tools/clip_goldens.py               # -> target/clip-goldens/sd15/
    cargo test --release -p sd-clip --test text_encoder_goldens -- --ignored

Writes `<out>/text_encoder/{config.json,model.safetensors}` (transformers 5 layout, keys without
`text_model.`) and `<out>/clip.safetensors` with the same keys as fixtures/goldens/<model>/clip.safetensors:
`input_ids [n,77]`, `last_hidden_state`, `prompt_embeds_clip_skip_1` (StableDiffusionPipeline's
clip_skip=1 = final layer norm of hidden_states[-2]). Deterministic: fixed seed, one thread.
"""

import argparse
import os
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TOOLS_DIR)
sys.path.insert(0, TOOLS_DIR)

import torch  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from fixturegen.common import write_tensors  # noqa: E402  (also pins one thread, deterministic)
from fixturegen.pipelines import randomise_parameters  # noqa: E402

# runwayml/stable-diffusion-v1-5 text_encoder/config.json, shape-relevant fields.
SD15_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

SEED = 15

PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "masterpiece, best quality, 1girl, (detailed eyes:1.2), looking at viewer, cherry blossoms",
    "an extremely long prompt " + ", ".join(f"with detail number {i}" for i in range(30)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO_DIR, "target", "clip-goldens", "sd15"))
    args = parser.parse_args()
    out = os.path.abspath(args.out)

    torch.manual_seed(SEED)
    model = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER))
    randomise_parameters(model, torch.Generator("cpu").manual_seed(SEED * 1000 + 3))
    model = model.to(torch.float16).eval()
    model.save_pretrained(os.path.join(out, "text_encoder"), safe_serialization=True)

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(REPO_DIR, "fixtures", "tiny-sd", "tokenizer"))
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    model = model.float()
    with torch.no_grad():
        result = model(ids, output_hidden_states=True)
        clip_skip_1 = model.final_layer_norm(result.hidden_states[-2])
    write_tensors(
        os.path.join(out, "clip.safetensors"),
        {
            "input_ids": ids,
            "last_hidden_state": result.last_hidden_state,
            "prompt_embeds_clip_skip_1": clip_skip_1,
        },
        metadata={"prompts": "\n".join(PROMPTS)},
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
