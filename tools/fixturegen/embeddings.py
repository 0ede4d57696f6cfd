"""Textual-inversion fixtures: seeded random embeddings in the formats SD 1.5 users bring, refused
files, and txt2img runs with diffusers' `load_textual_inversion` (plain prompt mode).

Files, fixtures/embeddings/<model>/ (vectors as wide as the model's text encoder, std 0.5):

  duo.safetensors   A1111 / kohya: {"emb_params": [2, width]}, f16.
  singlet.safetensors  diffusers learned_embeds: {"<singlet>": [width]}, f32.
  trio.pt           A1111 .pt written by torch.save: {"string_to_token": {"*": 265},
                    "string_to_param": {"*": [3, width]}, "name", "step", "sd_checkpoint",
                    "sd_checkpoint_name"}, f32.
  quartet.bin          textual_inversion's original layout: string_to_param a torch.nn.ParameterDict,
                    f16 (only loaded by the Rust tests, no run).

fixtures/embeddings/bad/:

  os_system.pt      a torch zip whose data.pkl calls os.system("echo pwned") on unpickling (GLOBAL
                    'os system' + REDUCE); torch.load(weights_only=True) refuses it too.
  wide.safetensors  {"emb_params": [2, 1024]}: an SD 2.x embedding.
  sdxl.safetensors  {"clip_l": [2, 768], "clip_g": [2, 1280]}.

Goldens (goldens/<model>/embeddings.safetensors, goldens/embeddings.json): txt2img at 64x64, PNDM,
10 steps, guidance 7.5, seed 0, with duo, singlet and trio loaded in that order (file-name order, as
`--embedding-dir` reads them) by `pipe.load_textual_inversion(file, token=<stem>)`. The vectors
of each file as torch reads them are stored under `<stem>/vectors`.
"""

import io
import os
import zipfile

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from . import generations
from .common import cpu_generator, fresh_dir, load_pipeline, tensor_stats, write_json, write_tensors

MODELS = ("tiny-sd", "tiny-sd-alt")
SEED = 0
SAMPLER = "pndm"
STD = 0.5
# name -> (vector count, generator seed)
EMBEDDINGS = {"duo": (2, 7000), "singlet": (1, 7100), "trio": (3, 7200), "quartet": (4, 7300)}
LOADED = ("duo", "singlet", "trio")
RUNS = {
    "single_in_prompt": {"prompt": "a photograph of singlet riding a horse", "negative_prompt": "blurry, low quality"},
    "multi_in_prompt": {"prompt": "a photograph of an astronaut riding a horse, trio", "negative_prompt": "blurry, low quality"},
    "multi_in_negative": {"prompt": "a photograph of an astronaut riding a horse", "negative_prompt": "duo, blurry"},
    "both": {"prompt": "trio astronaut, singlet", "negative_prompt": "duo"},
}


def vectors(name, width):
    count, seed = EMBEDDINGS[name]
    return torch.randn((count, width), generator=cpu_generator(seed), dtype=torch.float32) * STD


def write_files(out_dir, width):
    fresh_dir(out_dir)
    save_file({"emb_params": vectors("duo", width).to(torch.float16)}, os.path.join(out_dir, "duo.safetensors"))
    save_file({"<singlet>": vectors("singlet", width)[0].contiguous()}, os.path.join(out_dir, "singlet.safetensors"))
    a1111 = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vectors("trio", width)},
        "name": "trio",
        "step": 1500,
        "sd_checkpoint": "6ce0161689",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
    }
    torch.save(a1111, os.path.join(out_dir, "trio.pt"))
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors("quartet", width).to(torch.float16))})
    torch.save({"string_to_token": {"*": 265}, "string_to_param": params}, os.path.join(out_dir, "quartet.bin"))


class RunsASystemCommand:
    """Pickles as os.system("echo pwned"): what a malicious .pt does."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def write_bad_files(out_dir):
    fresh_dir(out_dir)
    # A real torch file, then its data.pkl swapped for one that runs a command. pickle writes
    # os.system as `posix system` on Linux; name it `os system` as written by hand.
    buffer = io.BytesIO()
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}}, buffer)
    evil = torch.serialization.pickle.dumps(RunsASystemCommand(), protocol=2).replace(b"cposix\n", b"cos\n")
    path = os.path.join(out_dir, "os_system.pt")
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = evil if info.filename.endswith("/data.pkl") else source.read(info)
            target.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    try:
        torch.load(path, weights_only=True)
        raise RuntimeError("torch loads os_system.pt with weights_only=True")
    except torch.serialization.pickle.UnpicklingError:
        pass
    save_file({"emb_params": torch.zeros(2, 1024)}, os.path.join(out_dir, "wide.safetensors"))
    save_file({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}, os.path.join(out_dir, "sdxl.safetensors"))


def file_vectors(path):
    """The vectors of an embedding file as torch reads it (the reference for our loaders)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        data = load_file(path)
    else:
        data = torch.load(path, weights_only=False)  # our own file, just written
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)
        (tensor,) = params.values()
    elif "emb_params" in data:
        tensor = data["emb_params"]
    else:
        (tensor,) = data.values()
    return tensor.detach().float().reshape(-1, tensor.shape[-1])


def write_goldens(fixtures_dir, goldens_dir):
    write_bad_files(os.path.join(fixtures_dir, "embeddings", "bad"))
    runs = {}
    for model in MODELS:
        model_dir = os.path.join(fixtures_dir, model)
        out_dir = os.path.join(goldens_dir, model)
        files_dir = os.path.join(fixtures_dir, "embeddings", model)
        pipe = load_pipeline(StableDiffusionPipeline, model_dir)
        write_files(files_dir, pipe.text_encoder.config.hidden_size)
        tensors = {}
        for name in EMBEDDINGS:
            path = os.path.join(files_dir, next(f for f in os.listdir(files_dir) if f.startswith(name + ".")))
            tensors[f"{name}/vectors"] = file_vectors(path)
        for name in LOADED:
            path = os.path.join(files_dir, next(f for f in os.listdir(files_dir) if f.startswith(name + ".")))
            pipe.load_textual_inversion(path, token=name)
        runs[model] = {}
        for key, prompts in RUNS.items():
            params = dict(generations.common_params(), **prompts, height=generations.SIZE, width=generations.SIZE, seed=SEED)
            converted = {
                "prompt": pipe.maybe_convert_prompt(params["prompt"], pipe.tokenizer),
                "negative_prompt": pipe.maybe_convert_prompt(params["negative_prompt"], pipe.tokenizer),
            }
            ids = {k: pipe.tokenizer(v, padding="max_length", max_length=77, truncation=True).input_ids for k, v in converted.items()}
            latents, images, extra = generations.txt2img(pipe, model, SAMPLER, params)
            tensors[f"{key}/latents"] = latents
            png = f"embeddings_{key}.png"
            generations.save_png(images[0], os.path.join(out_dir, png))
            runs[model][key] = {
                "embeddings": [f"embeddings/{model}/{n}{'.pt' if n == 'trio' else '.safetensors'}" for n in LOADED],
                **params,
                "converted": converted,
                "input_ids": {k: [i for i in v if i != pipe.tokenizer.eos_token_id] for k, v in ids.items()},
                "generator": generations.generator_repr(SEED),
                "scheduler": extra["scheduler"],
                "sampler": extra["sampler"],
                "latents_key": f"{key}/latents",
                "latents": tensor_stats(latents),
                "png": png,
            }
            print(f"{model} {key}: {converted}")
        write_tensors(os.path.join(out_dir, "embeddings.safetensors"), tensors)
    write_json(os.path.join(goldens_dir, "embeddings.json"), {"description": __doc__, "runs": runs})
