"""`sd serve` driven by a real A1111 client: the `webuiapi` package from PyPI (its version is
pinned in .ci/run and tests/server_webuiapi.rs). Run by tests/server_webuiapi.rs, which starts the
server and passes:

    SD_BIN      the sd binary (to make the reference images with `sd generate`)
    SD_PORT     the server's port on 127.0.0.1
    SD_MODEL    the model the server was started with
    SD_SCRATCH  a folder for files

Each check prints one line; any failure raises (non-zero exit).
"""

import os
import subprocess
import threading
import time

import webuiapi
from PIL import Image

SD_BIN = os.environ["SD_BIN"]
PORT = int(os.environ["SD_PORT"])
MODEL = os.environ["SD_MODEL"]
SCRATCH = os.environ["SD_SCRATCH"]

api = webuiapi.WebUIApi(host="127.0.0.1", port=PORT, sampler="Euler a", steps=3)


def sd_generate(name, *args):
    """Images `sd generate` writes for the same parameters (NAME-1.png … for a batch)."""
    out = os.path.join(SCRATCH, name + ".png")
    subprocess.run(
        [SD_BIN, "generate", "--quiet", "--model", MODEL, "--output", out, *args],
        check=True,
    )
    return out


def pixels(image):
    return image.convert("RGB").tobytes()


def assert_same_pixels(served, path, what):
    reference = Image.open(path)
    assert served.size == reference.size, f"{what}: {served.size} vs {reference.size}"
    assert pixels(served) == pixels(reference), f"{what}: pixels differ from sd generate's"
    print(f"ok: {what}: {served.size[0]}x{served.size[1]} equals sd generate's, byte for byte")


def check_lists():
    models = api.get_sd_models()
    titles = api.util_get_model_names()
    assert titles and all("title" in m and "model_name" in m for m in models), models
    samplers = api.util_get_sampler_names()
    for name in ["Euler", "Euler a", "DPM++ 2M", "DDIM"]:
        assert name in samplers, samplers
    schedulers = api.util_get_scheduler_names()
    assert "karras" in schedulers and "automatic" in schedulers, schedulers
    print(f"ok: get_sd_models {titles}, get_samplers ({len(samplers)}), schedulers {schedulers}")
    return titles


def check_txt2img():
    result = api.txt2img(
        prompt="a red fox in the snow",
        negative_prompt="blurry",
        seed=1234,
        cfg_scale=7.5,
        width=64,
        height=64,
        batch_size=2,
        sampler_name="Euler a",
        steps=3,
    )
    assert len(result.images) == 2, result.info
    assert result.info["all_seeds"] == [1234, 1235], result.info
    assert "Seed: 1235" in result.info["infotexts"][1], result.info["infotexts"]
    reference = sd_generate(
        "txt2img", "--prompt", "a red fox in the snow", "--negative-prompt", "blurry",
        "--seed", "1234", "--cfg", "7.5", "-W", "64", "-H", "64", "--batch", "2",
        "--scheduler", "Euler a", "--steps", "3",
    )
    for index, image in enumerate(result.images):
        assert_same_pixels(image, reference.replace(".png", f"-{index + 1}.png"), f"txt2img image {index}")
    return result.images[0]


def check_img2img_with_mask():
    # A 32x32 init image, served at 64x64 (resize mode 0), left half repainted.
    init = Image.new("RGB", (32, 32))
    init.putdata([((x * 8) % 256, (y * 8) % 256, 128) for y in range(32) for x in range(32)])
    mask = Image.new("L", (32, 32))
    mask.putdata([255 if x < 16 else 0 for y in range(32) for x in range(32)])
    init_path = os.path.join(SCRATCH, "init.png")
    mask_path = os.path.join(SCRATCH, "mask.png")
    init.save(init_path)
    mask.save(mask_path)
    result = api.img2img(
        images=[init],
        mask_image=mask,
        prompt="a lighthouse",
        seed=77,
        width=64,
        height=64,
        denoising_strength=0.6,
        cfg_scale=7.0,
        sampler_name="Euler a",
        steps=4,
    )
    assert len(result.images) == 1, result.info
    reference = sd_generate(
        "img2img", "--prompt", "a lighthouse", "--seed", "77", "-W", "64", "-H", "64",
        "--init-image", init_path, "--mask", mask_path, "--strength", "0.6", "--cfg", "7",
        "--scheduler", "Euler a", "--steps", "4",
        # webuiapi's defaults, A1111's: mask_blur 4, inpainting_fill 0 (fill).
        "--mask-blur", "4", "--masked-content", "fill",
    )
    assert_same_pixels(result.images[0], reference, "img2img with a mask")


def check_png_info(image):
    result = api.png_info(image)
    info = result.json["info"]
    assert info.startswith("a red fox in the snow\nNegative prompt: blurry\n"), info
    assert result.json["parameters"]["Seed"] == "1234", result.json["parameters"]
    print("ok: png_info round trip: " + info.splitlines()[-1][:60] + "…")


def check_interrupt():
    outcome = {}

    def long_run():
        outcome["result"] = api.txt2img(prompt="slow", seed=5, width=64, height=64, steps=150)

    worker = threading.Thread(target=long_run)
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        progress = api.get_progress()
        if progress["state"]["sampling_step"] >= 2:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the long job never showed progress: {progress}")
    assert progress["current_image"], "progress has no preview"
    assert 0 < progress["progress"] < 1, progress
    api.interrupt()
    worker.join(timeout=60)
    assert not worker.is_alive(), "interrupt did not end the job"
    result = outcome["result"]
    assert len(result.images) == 1, result.info
    api.util_wait_for_ready(check_interval=0.1)
    print(f"ok: interrupt ended a 150-step job after step {progress['state']['sampling_step']}")


def check_set_model(titles):
    for title in titles:
        api.util_set_model(title)
        assert api.util_get_current_model() == title, (api.util_get_current_model(), title)
    api.util_set_model(titles[0])
    print(f"ok: util_set_model switched through {titles}")


titles = check_lists()
first = check_txt2img()
check_img2img_with_mask()
check_png_info(first)
check_interrupt()
check_set_model(titles)
print("webuiapi: all checks passed")
