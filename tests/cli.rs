//! The `sd` binary as users run it: exit codes, one-line errors, files written.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use serde_json::Value;
use stable_diffusion::png::read_rgb;
use support::cli::{assert_fails_naming, golden_run, path_arg, scratch, sd, stderr, stdout};
use support::{goldens, max_level_difference};

#[test]
fn default_run_uses_the_bundled_model_and_writes_a_png_that_info_reads_back() {
    let dir = scratch("default");
    let out = dir.join("fox.png");
    let run = sd(&[
        "generate",
        "--prompt",
        "a red fox, in the snow",
        "--negative-prompt",
        "blurry",
        "--steps",
        "3",
        "--seed",
        "1234",
        "--output",
        path_arg(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("bundled tiny test model"),
        "{}",
        stderr(&run)
    );
    let image = read_rgb(&out).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));

    let info = sd(&["info", path_arg(&out)]);
    assert!(info.status.success(), "{}", stderr(&info));
    let text = stdout(&info);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "a red fox, in the snow");
    assert_eq!(lines[1], "Negative prompt: blurry");
    for field in [
        "Steps: 3",
        "Sampler: PLMS", // the model's PNDM with skipped PRK steps, as A1111 names it
        "CFG scale: 7.5",
        "Seed: 1234",
        "Size: 64x64",
        "Model hash: ",
        "Model: tiny-sd",
        "Clip skip: 1",
    ] {
        assert!(
            lines[2].contains(field),
            "`{field}` missing from {}",
            lines[2]
        );
    }
}

/// The CLI's image is diffusers' image: the PNDM seed-0 golden through the command line.
#[test]
fn generate_reproduces_the_diffusers_golden() {
    let dir = scratch("golden");
    let out = dir.join("golden.png");
    let run = sd(&[
        &golden_run(
            "a photograph of an astronaut riding a horse",
            "blurry, low quality",
            "PNDM",
        )[..],
        &["--quiet", "--output", path_arg(&out)][..],
    ]
    .concat());
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).is_empty(), "--quiet printed: {}", stderr(&run));
    let ours = read_rgb(&out).unwrap();
    let golden = read_rgb(goldens().join("tiny-sd").join("txt2img_pndm_seed0.png")).unwrap();
    let worst = max_level_difference(&ours, &golden);
    assert!(worst <= 1, "pixels differ by {worst}");
}

#[test]
fn batch_writes_numbered_files_with_consecutive_seeds() {
    let dir = scratch("batch");
    let out = dir.join("b.png");
    let run = sd(&[
        "generate",
        "--prompt",
        "x",
        "--steps",
        "2",
        "--batch",
        "2",
        "--seed",
        "7",
        "-q",
        "--output",
        path_arg(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    for (file, seed) in [("b-1.png", "Seed: 7,"), ("b-2.png", "Seed: 8,")] {
        let info = sd(&["info", path_arg(&dir.join(file))]);
        assert!(stdout(&info).contains(seed), "{file}: {}", stdout(&info));
    }
}

#[test]
fn img2img_and_inpainting_run_from_the_command_line() {
    let dir = scratch("img2img");
    let init = goldens().join("init_image.png");
    let mask = goldens().join("mask.png");
    let out = dir.join("i.png");
    let img2img = sd(&[
        "generate",
        "--prompt",
        "x",
        "--steps",
        "4",
        "--init-image",
        path_arg(&init),
        "--strength",
        "0.5",
        "-q",
        "--output",
        path_arg(&out),
    ]);
    assert!(img2img.status.success(), "{}", stderr(&img2img));
    assert!(stdout(&sd(&["info", path_arg(&out)])).contains("Denoising strength: 0.5"));
    let inpaint = sd(&[
        "generate",
        "--prompt",
        "x",
        "--steps",
        "4",
        "--init-image",
        path_arg(&init),
        "--mask",
        path_arg(&mask),
        "-q",
        "--output",
        path_arg(&out),
    ]);
    assert!(inpaint.status.success(), "{}", stderr(&inpaint));
}

#[test]
fn any_multiple_of_the_vae_factor_is_a_valid_size() {
    // tiny-sd's VAE scales by 2, so 26×14 pixels are 13×7 latents: odd sides the UNet halves
    // (rounding up) and crops back, as diffusers does for e.g. 520×520 with SD 1.5.
    let out = scratch("odd-size").join("odd.png");
    let run = sd(&[
        "generate",
        "--prompt",
        "x",
        "--width",
        "26",
        "--height",
        "14",
        "--steps",
        "2",
        "-q",
        "--output",
        path_arg(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let image = read_rgb(&out).unwrap();
    assert_eq!((image.width(), image.height()), (26, 14));
}

#[test]
fn a_size_that_is_not_a_multiple_is_refused() {
    assert_fails_naming(
        &sd(&["generate", "--prompt", "x", "--width", "65", "-q"]),
        &["width", "65"],
    );
    assert_fails_naming(
        &sd(&["generate", "--prompt", "x", "--height", "0", "-q"]),
        &["height"],
    );
}

#[test]
fn a_missing_model_file_is_named() {
    let missing = scratch("missing").join("nope.safetensors");
    assert_fails_naming(
        &sd(&[
            "generate",
            "--prompt",
            "x",
            "--model",
            path_arg(&missing),
            "-q",
        ]),
        &[path_arg(&missing), "No such file"],
    );
}

#[test]
fn a_corrupt_model_file_is_named() {
    let corrupt = scratch("corrupt").join("broken.safetensors");
    std::fs::write(
        &corrupt,
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": not json}",
    )
    .unwrap();
    assert_fails_naming(
        &sd(&[
            "generate",
            "--prompt",
            "x",
            "--model",
            path_arg(&corrupt),
            "-q",
        ]),
        &[path_arg(&corrupt), "safetensors"],
    );
}

#[test]
fn an_unknown_scheduler_is_named_with_the_known_ones() {
    assert_fails_naming(
        &sd(&["generate", "--prompt", "x", "--scheduler", "Euler b", "-q"]),
        &["unknown scheduler", "Euler b", "DPM++ 2M Karras"],
    );
}

#[test]
fn other_bad_inputs_fail_on_one_line() {
    let dir = scratch("bad");
    let not_png = dir.join("not.png");
    std::fs::write(&not_png, b"GIF89a").unwrap();
    assert_fails_naming(
        &sd(&[
            "generate",
            "--prompt",
            "x",
            "--init-image",
            path_arg(&not_png),
            "-q",
        ]),
        &[path_arg(&not_png), "PNG"],
    );
    assert_fails_naming(&sd(&["info", path_arg(&not_png)]), &[path_arg(&not_png)]);
    assert_fails_naming(
        &sd(&["info", path_arg(&goldens().join("mask.png"))]),
        &["mask.png", "parameters"],
    );
    assert_fails_naming(
        &sd(&["generate", "--prompt", "x", "--clip-skip", "0", "-q"]),
        &["clip_skip"],
    );
}

/// `--precision` names its values; bf16 is refused for CUDA (which has its own f16 storage)
/// before any device is touched.
#[test]
fn precision_arguments_are_checked() {
    // clap's own usage error, which lists the values.
    let run = sd(&["generate", "--prompt", "x", "--precision", "fp8", "-q"]);
    let err = stderr(&run);
    assert!(!run.status.success());
    assert!(err.contains("fp8") && err.contains("f32, bf16"), "{err}");
    assert_fails_naming(
        &sd(&[
            "generate",
            "--prompt",
            "x",
            "--backend",
            "cuda",
            "--precision",
            "bf16",
            "-q",
        ]),
        &["--precision", "bf16", "CUDA"],
    );
}

/// The bf16 path runs end to end from the command line on the bundled model.
#[test]
fn bf16_generation_writes_a_png() {
    let out = scratch("bf16").join("bf16.png");
    let run = sd(&[
        "generate",
        "--prompt",
        "a lighthouse",
        "--precision",
        "bf16",
        "--steps",
        "3",
        "--seed",
        "1",
        "-q",
        "-o",
        path_arg(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let image = stable_diffusion::png::read_rgb(&out).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));
}

/// On a machine without a GPU, `--backend cuda` is one line naming what is missing (and in a
/// build without the `cuda` feature, one line naming the feature).
#[test]
fn cuda_without_a_device_fails_on_one_line() {
    #[cfg(any(feature = "cuda", feature = "cuda-13"))]
    if sd_cuda::CudaBackend::new(0).is_ok() {
        println!("skipped: this machine has a CUDA device");
        return;
    }
    let run = sd(&["generate", "--prompt", "x", "--backend", "cuda", "-q"]);
    let err = stderr(&run);
    assert_fails_naming(&run, &[]);
    if cfg!(any(feature = "cuda", feature = "cuda-13")) {
        assert!(err.contains("CUDA") || err.contains("NVRTC"), "{err}");
    } else {
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}

/// `--json --plain-prompt` prints the ids transformers' CLIPTokenizer gives (tokenizer goldens).
#[test]
fn tokenize_json_matches_the_reference_tokenizer() {
    let text = std::fs::read_to_string(goldens().join("tokenizer.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_array().unwrap();
    let short: Vec<&Value> = cases
        .iter()
        .filter(|c| c["truncated"] == false)
        .take(8)
        .collect();
    assert!(short.len() >= 5);
    for case in short {
        let prompt = case["prompt"].as_str().unwrap();
        let run = sd(&["tokenize", "--json", "--plain-prompt", prompt]);
        assert!(run.status.success(), "{}", stderr(&run));
        let printed: Value = serde_json::from_str(stdout(&run).trim()).unwrap();
        let expected = &case["untruncated_ids"];
        assert_eq!(&printed["ids"], expected, "prompt {prompt:?}");
        let count = expected.as_array().unwrap().len() - 2;
        assert_eq!(printed["count"], count, "prompt {prompt:?}");
    }
}

#[test]
fn tokenize_counts_a1111_chunks_without_their_syntax() {
    let run = sd(&["tokenize", "--json", "a (red:1.3) fox"]);
    let printed: Value = serde_json::from_str(stdout(&run).trim()).unwrap();
    assert_eq!(printed["count"], 3);
    // 100 words: two chunks, each with its own start and end token.
    let long = vec!["cat"; 100].join(" ");
    let run = sd(&["tokenize", "--json", &long]);
    let printed: Value = serde_json::from_str(stdout(&run).trim()).unwrap();
    assert_eq!(printed["count"], 100);
    assert_eq!(printed["ids"].as_array().unwrap().len(), 104);
}

/// LoRAs from the command line give the reference image: two files, one by `--lora` with split
/// weights and one by a prompt tag found in `--lora-dir` (the `two_loras` run of lora.json), and
/// the PNG names both with A1111's short hashes.
#[test]
fn loras_from_flags_and_prompt_tags_reproduce_the_reference() {
    let dir = scratch("lora");
    let out = dir.join("lora.png");
    let loras = support::fixtures().join("lora").join("tiny-sd");
    let kohya = format!(
        "{}:0.8",
        path_arg(&loras.join("kohya_diffusers.safetensors"))
    );
    let run = sd(&[
        &golden_run(
            "a photograph of an astronaut riding a horse<lora:locon:1.0:0.5>",
            "blurry, low quality",
            "EulerAncestralDiscreteScheduler",
        )[..],
        &[
            "--lora",
            &kohya,
            "--lora-dir",
            path_arg(&loras),
            "--output",
            path_arg(&out),
        ][..],
    ]
    .concat());
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("locon.safetensors: "),
        "{}",
        stderr(&run)
    );
    let ours = read_rgb(&out).unwrap();
    let golden = read_rgb(goldens().join("tiny-sd").join("lora_two_loras.png")).unwrap();
    let worst = max_level_difference(&ours, &golden);
    assert!(worst <= 1, "pixels differ by {worst}");
    let info = stdout(&sd(&["info", path_arg(&out)]));
    assert!(info.contains("<lora:locon:1.0:0.5>"), "{info}");
    assert!(info.contains("Lora hashes: \"kohya_diffusers: "), "{info}");

    // A tag without --lora-dir, and a name the folder does not hold, are refused by name.
    let tag_only = sd(&["generate", "--prompt", "x <lora:locon:1>", "--steps", "1"]);
    assert_fails_naming(&tag_only, &["--lora-dir", "locon"]);
    let unknown = sd(&[
        "generate",
        "--prompt",
        "x <lora:nope:1>",
        "--lora-dir",
        path_arg(&loras),
        "--steps",
        "1",
    ]);
    assert_fails_naming(&unknown, &["nope", "kohya_diffusers", "locon"]);
}

/// Embeddings from a folder give diffusers' image (the `both` run of embeddings.json: a
/// multi-vector and a single-vector embedding in the prompt, one in the negative prompt), and the
/// PNG lists them with A1111's short hashes.
#[test]
fn embeddings_from_a_folder_reproduce_the_reference_and_are_hashed() {
    let dir = scratch("embeddings");
    let out = dir.join("embeddings.png");
    let files = support::fixtures().join("embeddings").join("tiny-sd");
    let run = sd(&[
        &golden_run("trio astronaut, singlet", "duo", "PNDM")[..],
        &[
            "--embedding-dir",
            path_arg(&files),
            "--output",
            path_arg(&out),
        ][..],
    ]
    .concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let ours = read_rgb(&out).unwrap();
    let golden = read_rgb(goldens().join("tiny-sd").join("embeddings_both.png")).unwrap();
    let worst = max_level_difference(&ours, &golden);
    assert!(worst <= 1, "pixels differ by {worst}");
    let hash =
        |file: &str| stable_diffusion::model_hash::embedding_hash(&files.join(file)).unwrap();
    let info = stdout(&sd(&["info", path_arg(&out)]));
    let expected = format!(
        "TI hashes: \"trio: {}, singlet: {}, duo: {}\"",
        hash("trio.pt"),
        hash("singlet.safetensors"),
        hash("duo.safetensors")
    );
    assert!(info.contains(&expected), "{expected} missing from: {info}");

    // A file that is not an embedding is refused by name.
    let refused = sd(&[
        "generate",
        "--prompt",
        "x",
        "--steps",
        "1",
        "--embedding",
        path_arg(&support::fixtures().join("embeddings/bad/os_system.pt")),
    ]);
    assert_fails_naming(&refused, &["os_system.pt", "os.system"]);
}

#[test]
fn tokenize_shows_embedding_vectors_as_such() {
    let trio = support::fixtures().join("embeddings/tiny-sd/trio.pt");
    let model = support::fixtures().join("tiny-sd");
    let args = [
        "tokenize",
        "--model",
        path_arg(&model),
        "--embedding",
        path_arg(&trio),
    ];
    let run = sd(&[&args[..], &["a (trio:1.2) photo"]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    for vector in 1..=3 {
        let line = format!("<trio vector {vector}/3>");
        assert!(
            text.lines()
                .any(|l| l.contains(&line) && l.contains("weight 1.2")),
            "{line} missing from:\n{text}"
        );
    }
    assert!(text.contains("5 tokens"), "{text}");
    let run = sd(&[&args[..], &["--json", "a trio photo"]].concat());
    let printed: Value = serde_json::from_str(stdout(&run).trim()).unwrap();
    assert_eq!(printed["count"], 5);
    let vectors = printed["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[2]["position"], 4);
    assert_eq!(vectors[2]["embedding"], "trio");
    assert_eq!(vectors[2]["vector"], 2);
}
