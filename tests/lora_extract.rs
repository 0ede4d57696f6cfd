//! `sd lora extract` and `sd lora resize` against their references (written by
//! `tools/fixturegen/lora_extract.py`, see `fixtures/goldens/lora_resize.json`):
//! - extract: tiny-sd with the `peft` LoRA fused in by diffusers, extracted back at the LoRA's
//!   rank, gives the LoRA's image (diffusers, unfused) within one level;
//! - resize: kohya's resize (torch.linalg.svd) of the `locon` file, module by module, and the
//!   ranks kohya's dynamic rules pick.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use sd_core::weights::SafetensorsFile;
use serde_json::Value;
use stable_diffusion::lora::extract::clamp_to_quantile;
use stable_diffusion::lora::resize::{DynamicRank, ResizeOptions, resize};
use stable_diffusion::png::read_rgb;
use support::cli::{assert_fails_naming, golden_run, path_arg, scratch, sd, stderr};
use support::{fixtures, goldens, max_level_difference};

/// Resized factors' products agree with torch's f32 SVD to this, relative to the module's
/// largest entry (both are f32 products of the same rank-r truncation; measured ≤ 2e-6).
const PRODUCT_TOLERANCE: f32 = 1e-5;

fn resize_json() -> Value {
    let text = std::fs::read_to_string(goldens().join("lora_resize.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `component_file` of tiny-sd with the tensors of `replacements` (f32) written over its own.
fn rewrite_component(from: &Path, to: &Path, replacements: &SafeTensors<'_>, prefix: &str) {
    let bytes = std::fs::read(from).unwrap();
    let original = SafeTensors::deserialize(&bytes).unwrap();
    let replaced: HashMap<String, TensorView<'_>> = replacements
        .tensors()
        .into_iter()
        .filter_map(|(key, view)| Some((key.strip_prefix(prefix)?.to_string(), view)))
        .collect();
    let mut used = 0;
    let views: Vec<(String, TensorView<'_>)> = original
        .tensors()
        .into_iter()
        .map(|(name, view)| match replaced.get(&name) {
            Some(new) => {
                used += 1;
                (name, new.clone())
            }
            None => (name, view),
        })
        .collect();
    assert_eq!(
        used,
        replaced.len(),
        "every fused tensor of {prefix} is in {}",
        from.display()
    );
    safetensors::serialize_to_file(views, None, to).unwrap();
}

/// tiny-sd with the fused weights of `extract_tuned.safetensors`: the "fine-tuned" checkpoint.
fn tuned_model(dir: &Path) -> PathBuf {
    let base = fixtures().join("tiny-sd");
    let tuned = dir.join("tuned");
    copy_dir(&base, &tuned);
    let fused = std::fs::read(fixtures().join("lora/tiny-sd/extract_tuned.safetensors")).unwrap();
    let fused = SafeTensors::deserialize(&fused).unwrap();
    for (component, file) in [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ] {
        rewrite_component(
            &base.join(component).join(file),
            &tuned.join(component).join(file),
            &fused,
            &format!("{component}/"),
        );
    }
    tuned
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Without kohya's clamp (lossy by design, see `lora::extract`): with it, this image is 24 levels
/// off at quantile 0.99 and 5 at quantile 1 (its signed quantile cuts the negative side at −max).
#[test]
fn a_lora_extracted_from_a_merged_model_gives_the_lora_image() {
    let dir = scratch("lora-extract");
    let tuned = tuned_model(&dir);
    let extracted = dir.join("extracted.safetensors");
    let run = sd(&[
        "lora",
        "extract",
        "--base",
        path_arg(&fixtures().join("tiny-sd")),
        "--tuned",
        path_arg(&tuned),
        "--rank",
        "4",
        "--no-clamp",
        "-o",
        path_arg(&extracted),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));

    let file = SafetensorsFile::open(&extracted).unwrap();
    let alpha = file
        .get("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.alpha")
        .unwrap();
    assert_eq!(alpha.iter().copied().collect::<Vec<_>>(), [4.0]);
    assert!(
        file.names()
            .any(|k| k.starts_with("lora_te_text_model_encoder_layers_"))
    );
    assert_eq!(file.metadata()["ss_network_module"], "networks.lora");

    let out = dir.join("extracted.png");
    let generate = sd(&[
        &golden_run(
            "a photograph of an astronaut riding a horse",
            "blurry, low quality",
            "PNDMScheduler",
        )[..],
        &["--lora", path_arg(&extracted), "--output", path_arg(&out)][..],
    ]
    .concat());
    assert!(generate.status.success(), "{}", stderr(&generate));
    assert!(
        !stderr(&generate).contains("skipped"),
        "{}",
        stderr(&generate)
    );
    let golden = read_rgb(goldens().join("tiny-sd").join("lora_peft.png")).unwrap();
    let worst = max_level_difference(&read_rgb(&out).unwrap(), &golden);
    assert!(worst <= 1, "pixels differ by {worst}");
}

#[test]
fn the_clamp_cuts_at_torchs_quantile_of_the_signed_entries() {
    let json = resize_json();
    let spec = &json["clamp"];
    let read = |key: &str| {
        let rows: Vec<Vec<f64>> = serde_json::from_value(spec[key].clone()).unwrap();
        Array2::from_shape_fn((rows.len(), rows[0].len()), |(i, j)| rows[i][j])
    };
    for case in spec["cases"].as_array().unwrap() {
        let (mut up, mut down) = (read("up"), read("down"));
        let quantile = case["quantile"].as_f64().unwrap();
        clamp_to_quantile(&mut up, &mut down, quantile);
        let expected: Vec<f64> = serde_json::from_value(case["clamped"].clone()).unwrap();
        let ours: Vec<f64> = up.iter().chain(down.iter()).copied().collect();
        for (a, b) in ours.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-12, "quantile {quantile}: {a} vs {b}");
        }
    }
}

/// `[rows, everything else]` of a factor, as a matrix.
fn matrix(file: &SafetensorsFile, key: &str) -> Array2<f32> {
    let t = file.get(key).unwrap();
    let rows = t.shape()[0];
    let cols = t.len() / rows;
    t.into_shape_with_order((rows, cols)).unwrap()
}

#[test]
fn resizing_matches_kohya_module_by_module() {
    let json = resize_json();
    let spec = &json["resize"];
    let dir = scratch("lora-resize");
    let out = dir.join("resized.safetensors");
    let input = fixtures().join(spec["lora"].as_str().unwrap());
    let run = sd(&[
        "lora",
        "resize",
        path_arg(&input),
        "--rank",
        &spec["new_rank"].to_string(),
        "--conv-rank",
        &spec["new_conv_rank"].to_string(),
        "-o",
        path_arg(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let ours = SafetensorsFile::open(&out).unwrap();
    let golden = SafetensorsFile::open(goldens().join(spec["file"].as_str().unwrap())).unwrap();
    let mut modules = 0;
    for key in golden.names().filter(|k| k.ends_with(".lora_down.weight")) {
        let module = key.trim_end_matches(".lora_down.weight");
        let up = format!("{module}.lora_up.weight");
        let alpha = format!("{module}.alpha");
        assert_eq!(
            ours.info(key).unwrap().shape,
            golden.info(key).unwrap().shape,
            "{key}"
        );
        assert_eq!(
            ours.info(&up).unwrap().shape,
            golden.info(&up).unwrap().shape,
            "{up}"
        );
        let product = |f: &SafetensorsFile| matrix(f, &up).dot(&matrix(f, key));
        let (mine, theirs) = (product(&ours), product(&golden));
        let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = (&mine - &theirs).iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            worst <= PRODUCT_TOLERANCE * scale,
            "{module}: {worst} of {scale}"
        );
        let (a, b) = (ours.get(&alpha).unwrap(), golden.get(&alpha).unwrap());
        assert!((a.sum() - b.sum()).abs() <= 1e-6 * b.sum().abs(), "{alpha}");
        modules += 1;
    }
    assert_eq!(modules, spec["modules"].as_u64().unwrap());
    assert!(ours.metadata()["ss_training_comment"].starts_with("dimension is resized from"));
}

#[test]
fn dynamic_ranks_are_the_ones_kohya_picks() {
    let json = resize_json();
    let input = fixtures().join(json["resize"]["lora"].as_str().unwrap());
    for (method, spec) in json["dynamic"].as_object().unwrap() {
        let param = spec["param"].as_f64().unwrap();
        let rule = match method.as_str() {
            "sv_ratio" => DynamicRank::SvRatio(param),
            "sv_cumulative" => DynamicRank::SvCumulative(param),
            "sv_fro" => DynamicRank::SvFro(param),
            other => panic!("unknown method {other}"),
        };
        let options = ResizeOptions {
            dynamic: Some(rule),
            ..ResizeOptions::new(spec["max_rank"].as_u64().unwrap() as usize)
        };
        let resized = resize(&input, &options).unwrap();
        let mut checked = 0;
        for module in &resized.modules {
            let expected = &spec["modules"][&module.key];
            // Where the deciding ratio sits within rounding of the threshold either rank is right.
            if expected["margin"].as_f64().unwrap() < 1e-5 {
                continue;
            }
            assert_eq!(
                module.new_rank as u64,
                expected["rank"].as_u64().unwrap(),
                "{method} {}",
                module.key
            );
            checked += 1;
        }
        assert!(
            checked * 2 > resized.modules.len(),
            "{method}: only {checked} decided"
        );
    }
}

#[test]
fn bad_extract_and_resize_arguments_are_refused_by_name() {
    let dir = scratch("lora-extract-bad");
    let model = fixtures().join("tiny-sd");
    let lora = fixtures().join("lora/tiny-sd/locon.safetensors");
    let out = dir.join("out.safetensors");
    let extract = |tuned: &Path, extra: &[&str]| {
        sd(&[
            &[
                "lora",
                "extract",
                "--base",
                path_arg(&model),
                "--tuned",
                path_arg(tuned),
            ][..],
            extra,
        ]
        .concat())
    };
    // Checkpoints of different shapes: the tensor and both shapes.
    let other = fixtures().join("tiny-sd-alt");
    assert_fails_naming(
        &extract(&other, &["-o", path_arg(&out)]),
        &["tensor", "expected", "found"],
    );
    assert_fails_naming(
        &extract(&dir.join("missing"), &["-o", path_arg(&out)]),
        &["missing"],
    );
    assert_fails_naming(
        &extract(&model, &["--rank", "0", "-o", path_arg(&out)]),
        &["--rank"],
    );
    assert_fails_naming(
        &extract(&model, &["--clamp-quantile", "1.5", "-o", path_arg(&out)]),
        &["--clamp-quantile", "1.5"],
    );
    // A usage error of clap's (exit code 2) naming both flags.
    let both = extract(
        &model,
        &[
            "--clamp-quantile",
            "0.9",
            "--no-clamp",
            "-o",
            path_arg(&out),
        ],
    );
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(stderr(&both).contains("'--no-clamp'") && stderr(&both).contains("--clamp-quantile"));
    assert_fails_naming(
        &extract(&model, &["-o", path_arg(&dir.join("out.pt"))]),
        &["--output", "out.pt"],
    );

    let resize = |input: &Path, extra: &[&str]| {
        sd(&[
            &["lora", "resize", path_arg(input), "-o", path_arg(&out)][..],
            extra,
        ]
        .concat())
    };
    assert_fails_naming(
        &resize(&lora, &["--dynamic-method", "sv_fro"]),
        &["--dynamic-param"],
    );
    assert_fails_naming(
        &resize(
            &lora,
            &["--dynamic-method", "sv_fro", "--dynamic-param", "2"],
        ),
        &["--dynamic-param", "2"],
    );
    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(&lora).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_naming(&resize(&truncated, &[]), &["truncated.safetensors"]);
}
