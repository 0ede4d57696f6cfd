//! Hostile-but-plausible input to `sd` and the library (issue 19): each kind of failure that
//! used to destroy a file, abort, panic, give a black image with exit 0 or blame the wrong thing
//! is a one-line error now (or, for a file the run reads, leaves it byte-identical). Plus the
//! EMA choice of full checkpoints against diffusers' `from_single_file`.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use safetensors::tensor::{Dtype, TensorView};
use sd_core::cpu::CpuBackend;
use sd_core::weights::{UnetWeights, WeightStore};
use sd_testkit::{Goldens, assert_matches_golden};
use serde_json::{Value, json};
use stable_diffusion::unet::{UNet2DConditionModel, UNetConfig};
use stable_diffusion::{LoadOptions, RgbImage, StableDiffusion};
use support::cli::{assert_fails_naming, path_arg, scratch, sd, sd_with, stderr, stdout};
use support::fixtures;

/// A copy of fixtures/tiny-sd to edit.
fn tiny_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("tiny-sd");
    copy_dir(&fixtures().join("tiny-sd"), &copy);
    copy
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Change one field of a JSON config file.
fn set_field(path: &Path, field: &str, value: Value) {
    let mut config: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    config[field] = value;
    std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Each `(file, field, value)` set alone in a copy of tiny-sd makes `sd generate` fail naming
/// the field and the file.
fn assert_each_value_refused(dir: &Path, cases: &[(&str, &str, Value)]) {
    let model = tiny_copy(dir);
    for (file, field, value) in cases {
        let path = model.join(file);
        let original = std::fs::read(&path).unwrap();
        set_field(&path, field, value.clone());
        assert_fails_naming(&generate(&model, dir, &[]), &[field, file]);
        std::fs::write(&path, original).unwrap();
    }
}

/// `sd generate` of the model at `model` (tiny, 1 step) writing into `dir`, with `extra` args.
fn generate(model: &Path, dir: &Path, extra: &[&str]) -> Output {
    let out = dir.join("out.png");
    let mut args = vec![
        "generate",
        "--model",
        path_arg(model),
        "-p",
        "a fox",
        "--steps",
        "1",
        "--seed",
        "1",
        "-o",
        path_arg(&out),
    ];
    args.extend_from_slice(extra);
    sd(&args)
}

/// Rewrite a safetensors file: `change` may replace each tensor's bytes; `extra` tensors
/// (name, dtype, shape, bytes) are added.
fn rewrite_safetensors(
    from: &Path,
    to: &Path,
    change: impl Fn(&str, Dtype, &[u8]) -> Option<Vec<u8>>,
    extra: impl Fn(&str, Dtype, &[u8]) -> Option<(String, Vec<u8>)>,
    scalars: &[(&str, Dtype, Vec<u8>)],
) {
    let bytes = std::fs::read(from).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let changed = change(&name, view.dtype(), data).unwrap_or_else(|| data.to_vec());
        if let Some((extra_name, extra_bytes)) = extra(&name, view.dtype(), data) {
            owned.push((extra_name, view.dtype(), view.shape().to_vec(), extra_bytes));
        }
        owned.push((name, view.dtype(), view.shape().to_vec(), changed));
    }
    for (name, dtype, data) in scalars {
        owned.push((name.to_string(), *dtype, Vec::new(), data.clone()));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(to, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// `bytes` (f16 or f32 little-endian) with every value's sign flipped: exact, as torch's `-x`.
fn negated(dtype: Dtype, bytes: &[u8]) -> Vec<u8> {
    let width = match dtype {
        Dtype::F16 | Dtype::BF16 => 2,
        Dtype::F32 => 4,
        other => panic!("unexpected dtype {other:?}"),
    };
    let mut out = bytes.to_vec();
    for value in out.chunks_exact_mut(width) {
        value[width - 1] ^= 0x80;
    }
    out
}

// ---- 1. data loss ------------------------------------------------------------------------

#[test]
fn an_output_naming_any_input_is_refused_and_the_input_stays_byte_identical() {
    let dir = scratch("inputs");
    let model = tiny_copy(&dir);
    let single = dir.join("model.safetensors");
    std::fs::copy(support::fixtures().join("ldm/tiny-sd.safetensors"), &single).unwrap();
    let init = dir.join("init.png");
    let mask = dir.join("mask.png");
    std::fs::copy(support::goldens().join("init_image.png"), &init).unwrap();
    std::fs::copy(support::goldens().join("mask.png"), &mask).unwrap();
    let inside = model.join("unet").join("config.json");
    let with_images = ["--init-image", path_arg(&init), "--mask", path_arg(&mask)];
    let cases: [(&Path, &Path, Vec<&str>); 4] = [
        (&single, &single, vec!["--config-dir", path_arg(&model)]),
        (&model, &inside, vec![]),
        (&model, &init, with_images.to_vec()),
        (&model, &mask, with_images.to_vec()),
    ];
    for (model_arg, target, extra) in cases {
        let before = std::fs::read(target).unwrap();
        let mut args = vec![
            "generate",
            "--model",
            path_arg(model_arg),
            "-p",
            "x",
            "--steps",
            "1",
        ];
        args.extend(extra);
        args.extend(["-o", path_arg(target)]);
        let run = sd(&args);
        assert_fails_naming(&run, &["input of this run", path_arg(target)]);
        assert!(
            !stderr(&run).contains("Loading"),
            "checked after loading: {}",
            stderr(&run)
        );
        assert_eq!(
            std::fs::read(target).unwrap(),
            before,
            "{} changed",
            target.display()
        );
    }
}

#[test]
fn the_output_folder_is_checked_before_the_model_loads() {
    let dir = scratch("folder");
    let run = sd(&[
        "generate",
        "-p",
        "x",
        "-o",
        path_arg(&dir.join("typo/out.png")),
    ]);
    assert_fails_naming(&run, &["folder does not exist", "typo"]);
    assert!(!stderr(&run).contains("Loading"), "{}", stderr(&run));
    let device = sd(&["generate", "-p", "x", "-o", "/dev/null"]);
    assert_fails_naming(&device, &["not a regular file"]);
}

#[test]
fn batch_names_keep_folder_and_extension_and_a_folder_output_is_a_folder() {
    let dir = scratch("names");
    let base = ["generate", "-p", "x", "--steps", "1", "-q"];
    let run = |extra: &[&str]| {
        let output = sd(&[&base[..], extra].concat());
        assert!(output.status.success(), "{}", stderr(&output));
    };
    run(&["--batch", "2", "-o", path_arg(&dir.join("fox.png"))]);
    std::fs::create_dir(dir.join("sub")).unwrap();
    run(&[
        "--batch",
        "2",
        "-o",
        &format!("{}/", dir.join("sub").display()),
    ]);
    run(&["-o", path_arg(&dir)]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fox-1.png", "fox-2.png", "sd-output.png", "sub"]);
    assert!(dir.join("sub/sd-output-1.png").is_file() && dir.join("sub/sd-output-2.png").is_file());
}

// ---- 2. aborts and panics ----------------------------------------------------------------

#[test]
fn absurd_config_sizes_fail_before_allocating() {
    let dir = scratch("sizes");
    let cases = [
        (
            "unet/config.json",
            "layers_per_block",
            json!(1_000_000_000_000u64),
        ),
        (
            "scheduler/scheduler_config.json",
            "num_train_timesteps",
            json!(1_000_000_000_000u64),
        ),
        (
            "vae/config.json",
            "layers_per_block",
            json!(1_000_000_000_000u64),
        ),
        (
            "text_encoder/config.json",
            "num_hidden_layers",
            json!(1_000_000_000_000u64),
        ),
    ];
    assert_each_value_refused(&dir, &cases);
}

#[test]
fn huge_sizes_and_batches_are_refused_with_the_reason() {
    let dir = scratch("huge");
    let model = fixtures().join("tiny-sd");
    let huge = generate(&model, &dir, &["-W", "16384", "-H", "16384"]);
    assert_fails_naming(&huge, &["16384×16384", "needs about", "GiB"]);
    let batch = generate(&model, &dir, &["--batch", "18446744073709551615"]);
    assert_fails_naming(&batch, &["batch", "64", "held in memory"]);
}

#[test]
fn a_scheduler_range_of_zero_is_a_config_error_not_a_panic() {
    let dir = scratch("clip-range");
    let model = tiny_copy(&dir);
    let config = model.join("scheduler/scheduler_config.json");
    set_field(&config, "clip_sample", json!(true));
    set_field(&config, "clip_sample_range", json!(0.0));
    let run = generate(&model, &dir, &["--scheduler", "DDIMScheduler"]);
    assert_fails_naming(&run, &["clip_sample_range", "scheduler_config.json"]);
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_full_device_is_one_line() {
    // Far more output than a pipe buffers, so the write surely meets the closed end.
    let prompt = "fox ".repeat(20_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sd"))
        .args(["tokenize", &prompt])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then dropped: closed
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));

    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sd"))
            .args(["tokenize", "a fox"])
            .stdout(full)
            .output()
            .unwrap();
        assert_fails_naming(&output, &["standard output", "No space left"]);
    }
}

#[test]
fn more_threads_than_cores_are_capped_with_a_notice() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let run = sd_with(&["tokenize", "a"], &[("RAYON_NUM_THREADS", "100000")]);
    assert!(run.status.success(), "{}", stderr(&run));
    let expected = format!("RAYON_NUM_THREADS=100000 is more than this machine's {cores} cores");
    assert!(stderr(&run).contains(&expected), "{}", stderr(&run));
}

// ---- 3. black images ----------------------------------------------------------------------

#[test]
fn nan_weights_stop_the_generation_at_the_step_they_poison() {
    let dir = scratch("nan");
    let model = tiny_copy(&dir);
    let unet = model.join("unet/diffusion_pytorch_model.safetensors");
    let nan_f16 = |dtype: Dtype, bytes: &[u8]| {
        assert_eq!(dtype, Dtype::F16);
        bytes
            .chunks(2)
            .flat_map(|_| 0x7E00u16.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    rewrite_safetensors(
        &unet.clone(),
        &unet,
        |name, dtype, bytes| (name == "conv_out.bias").then(|| nan_f16(dtype, bytes)),
        |_, _, _| None,
        &[],
    );
    let run = generate(&model, &dir, &[]);
    assert_fails_naming(&run, &["latents became NaN or infinite at step 1 of 1"]);
    assert!(!dir.join("out.png").exists());
}

#[test]
fn bad_config_values_and_prompt_weights_are_named_errors() {
    let dir = scratch("values");
    let cases = [
        (
            "scheduler/scheduler_config.json",
            "beta_start",
            json!(-0.001),
        ),
        ("scheduler/scheduler_config.json", "beta_end", json!(0.0)),
        ("unet/config.json", "norm_eps", json!(-1e-5)),
        ("text_encoder/config.json", "layer_norm_eps", json!(0.0)),
    ];
    assert_each_value_refused(&dir, &cases);
    let huge_weight = "(fox:100000000000000000000000000000000000000000)";
    let run = sd(&[
        "generate",
        "-p",
        huge_weight,
        "-o",
        path_arg(&dir.join("w.png")),
    ]);
    assert_fails_naming(&run, &["prompt", "weights must be within"]);
}

// ---- 4. EMA weights of full checkpoints --------------------------------------------------

/// fixtures/ldm/tiny-sd.safetensors plus negated `model_ema.*` copies of its UNet and the EMA
/// buffers: the file tools/ema_goldens.py builds (`full_checkpoint`), byte for byte in values.
fn full_checkpoint(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-sd-full.safetensors");
    let ema_key = |name: &str| {
        let rest = name.strip_prefix("model.")?;
        name.starts_with("model.diffusion_model.")
            .then(|| format!("model_ema.{}", rest.replace('.', "")))
    };
    rewrite_safetensors(
        &fixtures().join("ldm/tiny-sd.safetensors"),
        &path,
        |_, _, _| None,
        |name, dtype, bytes| ema_key(name).map(|key| (key, negated(dtype, bytes))),
        &[
            (
                "model_ema.decay",
                Dtype::F32,
                0.9999f32.to_le_bytes().to_vec(),
            ),
            (
                "model_ema.num_updates",
                Dtype::I32,
                1000i32.to_le_bytes().to_vec(),
            ),
        ],
    );
    path
}

fn unet_of(store: &WeightStore) -> UNet2DConditionModel<CpuBackend> {
    let config = UNetConfig::from_file(fixtures().join("tiny-sd/unet/config.json")).unwrap();
    UNet2DConditionModel::from_store(&CpuBackend::new(), config, store).unwrap()
}

#[test]
fn full_checkpoints_give_non_ema_weights_by_default_and_ema_on_request_as_diffusers() {
    let dir = scratch("ema");
    let full = full_checkpoint(&dir);
    let goldens = Goldens::open("tiny-sd", "ema.safetensors");
    let sample = goldens.tensor("sample");
    let timestep = f64::from(goldens.scalar("timestep"));
    let context = goldens.tensor("encoder_hidden_states");
    for (weights, key) in [
        (UnetWeights::NonEma, "non_ema/out"),
        (UnetWeights::Ema, "ema/out"),
    ] {
        let store = if weights == UnetWeights::default() {
            WeightStore::open(&full).unwrap()
        } else {
            WeightStore::open_with(&full, weights).unwrap()
        };
        assert_eq!(store.unet_weights(), Some(weights));
        let out = unet_of(&store)
            .forward(&CpuBackend::new(), &sample, timestep, &context)
            .unwrap();
        assert_matches_golden(&format!("{weights} UNet"), &out, &goldens.host(key));
    }
    let options = LoadOptions::default().config_dir(fixtures().join("tiny-sd"));
    let sd = StableDiffusion::load(&full, options.clone().ema(true)).unwrap();
    assert_eq!(sd.unet_weights(), Some(UnetWeights::Ema));
    // A file with one set has no choice to report, and refuses the EMA option.
    let pruned = fixtures().join("ldm/tiny-sd.safetensors");
    assert_eq!(WeightStore::open(&pruned).unwrap().unet_weights(), None);
    let refused = StableDiffusion::load(&pruned, options.ema(true)).unwrap_err();
    assert!(refused.to_string().contains("no EMA copies"), "{refused}");
}

#[test]
fn generate_says_which_unet_weights_it_loaded_and_writes_them_in_the_png() {
    let dir = scratch("ema-cli");
    let full = full_checkpoint(&dir);
    let config = fixtures().join("tiny-sd");
    for (extra, set) in [(&[][..], "non-EMA"), (&["--ema"][..], "EMA")] {
        let run = generate(
            &full,
            &dir,
            &[&["--config-dir", path_arg(&config)], extra].concat(),
        );
        assert!(run.status.success(), "{}", stderr(&run));
        assert!(
            stderr(&run).contains(&format!("UNet weights: {set} ")),
            "{}",
            stderr(&run)
        );
        let info = sd(&["info", path_arg(&dir.join("out.png"))]);
        let text = stdout(&info);
        assert!(text.contains(&format!("UNet weights: {set},")), "{text}");
    }
}

// ---- 5. wrong blame and ignored options ----------------------------------------------------

#[test]
fn options_that_cannot_apply_fail_instead_of_being_ignored() {
    let dir = scratch("ignored");
    let tokenize = sd(&["tokenize", "--model", "/nonexistent/model", "a fox"]);
    assert_fails_naming(
        &tokenize,
        &["--model", "/nonexistent/model", "does not exist"],
    );
    let folder = fixtures().join("tiny-sd");
    let config_dir = generate(&folder, &dir, &["--config-dir", "/nonexistent"]);
    assert_fails_naming(&config_dir, &["config_dir", "single files"]);
    let bench = sd(&[
        "bench",
        "--component",
        "clip",
        "--save-image",
        path_arg(&dir.join("b.png")),
    ]);
    assert_fails_naming(&bench, &["--save-image", "txt2img"]);
}

#[test]
fn an_unknown_scheduler_class_is_reported_with_the_one_used_instead() {
    let dir = scratch("class");
    let model = tiny_copy(&dir);
    let config = model.join("scheduler/scheduler_config.json");
    set_field(
        &config,
        "_class_name",
        json!("FlowMatchEulerDiscreteScheduler"),
    );
    let run = generate(&model, &dir, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(
        err.contains("FlowMatchEulerDiscreteScheduler") && err.contains("--scheduler"),
        "{err}"
    );
}

#[test]
fn errors_blame_what_the_user_gave_and_point_at_the_fix() {
    let dir = scratch("blame");
    let tiny = RgbImage::new(1, 1, vec![0, 0, 0]).unwrap();
    let pixel = dir.join("pixel.png");
    stable_diffusion::png::write_png(&pixel, &tiny, None).unwrap();
    let folder = fixtures().join("tiny-sd");
    let init = generate(&folder, &dir, &["--init-image", path_arg(&pixel)]);
    assert_fails_naming(&init, &["init_image (its width)"]);

    let spaced = generate(&folder, &dir, &["--scheduler", "Euler  b"]);
    assert_fails_naming(&spaced, &["`Euler  b`"]);

    let single = generate(&fixtures().join("ldm/tiny-sd.safetensors"), &dir, &[]);
    assert_fails_naming(&single, &["--config-dir"]);

    let index = generate(&folder.join("model_index.json"), &dir, &[]);
    assert_fails_naming(&index, &["give its folder"]);

    let help = sd(&["generate", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--prompt=\"-a fox\""));
}

#[test]
fn info_refuses_a_text_chunk_that_inflates_past_the_cap() {
    let dir = scratch("ztxt");
    let bomb = dir.join("bomb.png");
    let file = std::fs::File::create(&bomb).unwrap();
    let mut encoder = png::Encoder::new(file, 1, 1);
    encoder.set_color(png::ColorType::Rgb);
    // 4 MiB of one letter compresses to a few KB.
    let text = "a".repeat(4 << 20);
    encoder.add_ztxt_chunk("parameters".into(), text).unwrap();
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[0, 0, 0]).unwrap();
    writer.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 100_000);
    let run = sd(&["info", path_arg(&bomb)]);
    assert_fails_naming(&run, &["parameters", "1048576 bytes"]);
}
