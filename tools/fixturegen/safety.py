"""The safety checker fixture and its goldens: a tiny random `StableDiffusionSafetyChecker` whose
concept embeddings are placed so that, of a batch of four tiny-sd images, some are flagged and some
are not, with the special-care adjustment and diffusers' 3-decimal rounding deciding a case each.

Writes
- `tiny-safety/safety_checker/` (config.json + model.safetensors, f32) and
  `tiny-safety/feature_extractor/preprocessor_config.json` (28-pixel CLIP preprocessing);
- `goldens/safety/`: the four images the pipeline made (`generated_<i>.png`, before any check),
  the preprocessing inputs (`pattern_512.png`, `noise_150x200.png`), `resized_224_<input>.png`
  (CLIP's default 224 resize + crop of those as PIL does it, before normalising),
  `pipeline_<i>.png` (the images `StableDiffusionPipeline` returns with the checker on), and
  `safety.safetensors` (f32): `pixel_values/<image>` (the tiny preprocessor's output, what the
  tower is fed), `image_embeds` (the projection of the four generated images),
  `special_scores`, `concept_scores` (diffusers' rounded scores), `has_nsfw` (1 = flagged);
- `goldens/safety.json`: the parameters and which case each image exercises.
"""

import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPVisionConfig

from .common import cpu_generator, fresh_dir, write_json

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE_PROMPT = "blurry, low quality"
SEEDS = [20, 21, 22, 23]
STEPS = 10
SIZE = 64
GUIDANCE_SCALE = 7.5
PREPROCESSOR = {
    "crop_size": {"height": 28, "width": 28},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 28},
}
# What each image of the batch exercises (see place_concepts).
CASES = [
    "not flagged: every score rounds to <= 0 (concept 2 is 0.0003 over its threshold, rounded away)",
    "flagged by concept 0 alone, no special care",
    "special care (special concept 0), then flagged by concept 1 only thanks to the +0.01 adjustment",
    "special care (special concept 0), not flagged: concept 1 stays below even with the adjustment",
]


def tiny_checker():
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=7,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    config = CLIPConfig(text_config={}, vision_config=vision.to_dict(), projection_dim=16)
    torch.manual_seed(1500)
    checker = StableDiffusionSafetyChecker(config).eval()
    # transformers' init (std 0.02) makes every image embed alike; wider weights let the images
    # differ, so concepts can be placed between them.
    with torch.no_grad():
        for name, p in checker.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:
                continue
            p.copy_(torch.randn(p.shape) * (1.0 if p.dim() > 1 else 0.1))
    return checker


def image_embeds(checker, processor, images):
    clip_input = processor(images, return_tensors="pt").pixel_values
    with torch.no_grad():
        pooled = checker.vision_model(clip_input)[1]
        return checker.visual_projection(pooled)


def unit(v):
    return v / v.norm()


def place_concepts(checker, embeds):
    """Concept directions and thresholds that make the four images the cases of CASES."""
    e = [unit(v) for v in embeds]
    cos = lambda a, b: float(torch.dot(a, b))
    for i in range(4):
        for j in range(i + 1, 4):
            if cos(e[i], e[j]) > 0.9:
                raise RuntimeError(f"images {i} and {j} embed too alike ({cos(e[i], e[j]):.3f})")
    dim = embeds.shape[1]
    gen = torch.Generator().manual_seed(15)
    concepts = torch.randn(17, dim, generator=gen)
    concept_thresholds = torch.ones(17)  # random directions never come within 0.01 of cos 1
    special = torch.randn(3, dim, generator=gen)
    special_thresholds = torch.ones(3)

    # Image 1: concept 0 is its own direction.
    concepts[0] = e[1]
    concept_thresholds[0] = 0.95
    # Images 2 and 3 share special concept 0, above both of their cosines' threshold.
    special[0] = unit(e[2] + e[3])
    others = max(cos(special[0], e[0]), cos(special[0], e[1]))
    mine = min(cos(special[0], e[2]), cos(special[0], e[3]))
    if mine - others < 0.05:
        raise RuntimeError(f"special concept 0 does not separate images 2, 3 ({mine:.3f} vs {others:.3f})")
    special_thresholds[0] = (mine + others) / 2
    # Concept 1 near image 2: 0.005 below the threshold, so only the +0.01 of special care flags it.
    concepts[1] = e[2]
    concept_thresholds[1] = 1.005
    # Concept 2 at image 0: 0.0003 over, which diffusers' round(., 3) turns into 0 (not flagged).
    concepts[2] = e[0]
    concept_thresholds[2] = 1.0 - 0.0003
    with torch.no_grad():
        checker.concept_embeds.copy_(concepts)
        checker.concept_embeds_weights.copy_(concept_thresholds)
        checker.special_care_embeds.copy_(special)
        checker.special_care_embeds_weights.copy_(special_thresholds)


def preprocessing_inputs():
    rng = np.random.default_rng(1501)
    # Blocks of 8 pixels compress well as PNG and still give a 512² image real edges to resample.
    blocks = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pattern = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)
    noise = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)  # upscaled by the 224 resize
    return {"pattern_512": Image.fromarray(pattern), "noise_150x200": Image.fromarray(noise)}


def write_goldens(fixtures_dir, goldens_dir):
    model_dir = os.path.join(fixtures_dir, "tiny-safety")
    out_dir = os.path.join(goldens_dir, "safety")
    fresh_dir(model_dir)
    fresh_dir(out_dir)

    base = StableDiffusionPipeline.from_pretrained(
        os.path.join(fixtures_dir, "tiny-sd"), dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    base.set_progress_bar_config(disable=True)
    call = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE_SCALE,
        height=SIZE,
        width=SIZE,
        num_images_per_prompt=len(SEEDS),
    )
    generated = base(**call, generator=[cpu_generator(s) for s in SEEDS]).images

    processor = CLIPImageProcessorPil(**{k: v for k, v in PREPROCESSOR.items() if k != "image_processor_type"})
    checker = tiny_checker()
    place_concepts(checker, image_embeds(checker, processor, generated))

    checker.save_pretrained(os.path.join(model_dir, "safety_checker"), safe_serialization=True)
    write_json(os.path.join(model_dir, "feature_extractor", "preprocessor_config.json"), PREPROCESSOR)
    checker = StableDiffusionSafetyChecker.from_pretrained(os.path.join(model_dir, "safety_checker")).eval()
    processor = CLIPImageProcessorPil.from_pretrained(os.path.join(model_dir, "feature_extractor"))

    tensors = {}
    inputs = preprocessing_inputs()
    for i, image in enumerate(generated):
        image.save(os.path.join(out_dir, f"generated_{i}.png"))
        inputs[f"generated_{i}"] = image
    for name, image in inputs.items():
        if not name.startswith("generated"):
            image.save(os.path.join(out_dir, f"{name}.png"))
        tensors[f"pixel_values/{name}"] = processor(image, return_tensors="pt").pixel_values[0]
    default = CLIPImageProcessorPil(do_rescale=False, do_normalize=False)  # CLIP's 224 defaults
    for name in ("pattern_512", "noise_150x200"):
        resized = default(inputs[name], return_tensors="np").pixel_values[0]  # [3,224,224], 0..255 floats
        hwc = np.ascontiguousarray(resized.transpose(1, 2, 0)).astype(np.uint8)
        Image.fromarray(hwc).save(os.path.join(out_dir, f"resized_224_{name}.png"))

    clip_input = processor(generated, return_tensors="pt").pixel_values
    checked_images, has_nsfw = checker(clip_input=clip_input, images=[np.asarray(im) for im in generated])
    with torch.no_grad():
        embeds = checker.visual_projection(checker.vision_model(clip_input)[1])
    tensors["image_embeds"] = embeds
    tensors["has_nsfw"] = torch.tensor(has_nsfw, dtype=torch.float32)
    scores = scores_as_diffusers(checker, embeds)
    tensors["special_scores"] = scores["special"]
    tensors["concept_scores"] = scores["concept"]
    if has_nsfw != [False, True, True, False]:
        raise RuntimeError(f"the concepts did not produce the intended flags: {has_nsfw}")

    # The whole pipeline with the checker in its folder, as a user runs it.
    with_checker = os.path.join(out_dir, "_pipeline")
    shutil.copytree(os.path.join(fixtures_dir, "tiny-sd"), with_checker)
    for part in ("safety_checker", "feature_extractor"):
        shutil.copytree(os.path.join(model_dir, part), os.path.join(with_checker, part))
    index_path = os.path.join(with_checker, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index["requires_safety_checker"] = True
    write_json(index_path, index)
    pipe = StableDiffusionPipeline.from_pretrained(with_checker, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    result = pipe(**call, generator=[cpu_generator(s) for s in SEEDS])
    shutil.rmtree(with_checker)
    if result.nsfw_content_detected != has_nsfw:
        raise RuntimeError(f"the pipeline flagged {result.nsfw_content_detected}, the checker {has_nsfw}")
    for i, image in enumerate(result.images):
        image.save(os.path.join(out_dir, f"pipeline_{i}.png"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "safety.safetensors"))

    write_json(
        os.path.join(goldens_dir, "safety.json"),
        {
            "description": __doc__,
            "checker": "tiny-safety/safety_checker",
            "preprocessor": PREPROCESSOR,
            "call": {k: v for k, v in call.items()} | {"seeds": SEEDS, "scheduler": "PNDM (tiny-sd's own)"},
            "cases": CASES,
            "has_nsfw": has_nsfw,
            "pipeline_nsfw_content_detected": result.nsfw_content_detected,
        },
    )


def scores_as_diffusers(checker, embeds):
    """The rounded scores of diffusers' forward (its loop kept them in dicts; these are arrays)."""
    def cosine(a, b):
        return torch.mm(torch.nn.functional.normalize(a), torch.nn.functional.normalize(b).t()).detach().numpy()

    special_cos = cosine(embeds, checker.special_care_embeds)
    concept_cos = cosine(embeds, checker.concept_embeds)
    special = np.zeros(special_cos.shape, np.float32)
    concept = np.zeros(concept_cos.shape, np.float32)
    for i in range(embeds.shape[0]):
        adjustment = 0.0
        for c in range(special.shape[1]):
            special[i, c] = round(special_cos[i][c] - checker.special_care_embeds_weights[c].item() + adjustment, 3)
            if special[i, c] > 0:
                adjustment = 0.01
        for c in range(concept.shape[1]):
            concept[i, c] = round(concept_cos[i][c] - checker.concept_embeds_weights[c].item() + adjustment, 3)
    return {"special": torch.from_numpy(special), "concept": torch.from_numpy(concept)}
