//! The safety checker against diffusers' `StableDiffusionSafetyChecker` and transformers'
//! `CLIPImageProcessor` (goldens by `tools/fixturegen/safety.py`: a tiny random checker whose
//! concepts flag some images of a batch and not others).

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::fs::File;
use std::path::{Path, PathBuf};

use sd_clip::resample::{ResampleFilter, resize};
use sd_clip::{ClipImageProcessor, SafetyChecker};
use sd_core::cpu::CpuBackend;
use sd_core::pipeline::RgbImage;
use sd_testkit::{Goldens, fixtures};

/// The preprocessing golden bound of the issue: transformers normalises in f64/f32 steps, we in
/// f64 then f32, so only the last bits may differ.
const PIXEL_VALUES_MAX_ABS: f32 = 1e-5;
/// Cosine scores are rounded to 3 decimals; f32 reduction order moves a raw cosine by ~1e-7,
/// so the rounded scores agree exactly unless a score lies within that of a rounding boundary.
const SCORE_MAX_ABS: f32 = 1e-6;

fn golden_dir() -> PathBuf {
    fixtures().join("goldens/safety")
}

fn checker_dir() -> PathBuf {
    fixtures().join("tiny-safety")
}

fn goldens() -> Goldens {
    Goldens::open("safety", "safety.safetensors")
}

/// An 8-bit RGB PNG as Pillow writes it.
fn read_png(path: &Path) -> RgbImage {
    let mut reader = png::Decoder::new(std::io::BufReader::new(File::open(path).unwrap()))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    pixels.truncate(info.buffer_size());
    RgbImage::new(info.width as usize, info.height as usize, pixels).unwrap()
}

fn image(name: &str) -> RgbImage {
    read_png(&golden_dir().join(format!("{name}.png")))
}

fn generated() -> Vec<RgbImage> {
    (0..4).map(|i| image(&format!("generated_{i}"))).collect()
}

fn max_abs(a: impl IntoIterator<Item = f32>, b: impl IntoIterator<Item = f32>) -> f32 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pillow_bicubic_resize_to_224_is_byte_exact() {
    let processor = ClipImageProcessor::default();
    for name in ["pattern_512", "noise_150x200"] {
        let (ours, size) = processor.resized_and_cropped(&image(name)).unwrap();
        let golden = image(&format!("resized_224_{name}"));
        assert_eq!(size, (224, 224));
        let differing = ours
            .iter()
            .zip(golden.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} bytes differ from Pillow's"
        );
    }
}

#[test]
fn preprocessing_matches_clip_image_processor() {
    let processor = ClipImageProcessor::from_file(
        checker_dir().join("feature_extractor/preprocessor_config.json"),
    )
    .unwrap();
    let goldens = goldens();
    let names = ["generated_0", "generated_3", "pattern_512", "noise_150x200"];
    for name in names {
        let ours = processor.preprocess(&[image(name)]).unwrap();
        let golden = goldens.host(&format!("pixel_values/{name}"));
        assert_eq!(&ours.shape()[1..], golden.shape(), "{name}");
        let err = max_abs(ours.iter().copied(), golden.iter().copied());
        println!("{name}: max abs error {err:.2e}");
        assert!(err <= PIXEL_VALUES_MAX_ABS, "{name}: {err:e}");
    }
}

#[test]
fn flags_and_scores_match_diffusers() {
    let b = CpuBackend::new();
    let checker = SafetyChecker::load(&b, checker_dir()).unwrap();
    let goldens = goldens();
    let pixel_values = checker.processor().preprocess(&generated()).unwrap();
    let embeds = checker.image_embeds(&b, &pixel_values).unwrap();
    let golden_embeds = goldens.host("image_embeds");
    let err = max_abs(embeds.iter().copied(), golden_embeds.iter().copied());
    println!("image_embeds: max abs error {err:.2e}");
    assert!(err <= sd_testkit::GOLDEN_MAX_ABS, "image_embeds: {err:e}");

    let verdicts = checker.check(&b, &generated()).unwrap();
    let flags: Vec<bool> = verdicts.iter().map(|v| v.flagged).collect();
    let golden_flags: Vec<bool> = goldens.host("has_nsfw").iter().map(|&f| f > 0.5).collect();
    // Image 0: a concept 0.0003 over its threshold, rounded away; 1: flagged outright; 2: flagged
    // only through the special-care adjustment; 3: special care, still below every concept.
    assert_eq!(flags, golden_flags);
    assert_eq!(flags, [false, true, true, false]);
    let (special, concept) = (
        goldens.host("special_scores"),
        goldens.host("concept_scores"),
    );
    for (i, verdict) in verdicts.iter().enumerate() {
        let row = |t: &sd_core::HostTensor| -> Vec<f32> {
            t.outer_iter().nth(i).unwrap().iter().copied().collect()
        };
        let special_err = max_abs(verdict.special_scores.clone(), row(&special));
        let concept_err = max_abs(verdict.concept_scores.clone(), row(&concept));
        assert!(
            special_err <= SCORE_MAX_ABS,
            "image {i} special scores: {special_err:e}"
        );
        assert!(
            concept_err <= SCORE_MAX_ABS,
            "image {i} concept scores: {concept_err:e}"
        );
    }
}

#[test]
fn flagged_images_become_black_as_in_the_pipeline() {
    let b = CpuBackend::new();
    let checker = SafetyChecker::load(&b, checker_dir().join("safety_checker")).unwrap();
    let mut images = generated();
    let flags = checker.filter(&b, &mut images).unwrap();
    assert_eq!(flags, [false, true, true, false]);
    for (i, ours) in images.iter().enumerate() {
        assert_eq!(ours, &image(&format!("pipeline_{i}")), "image {i}");
    }
}

#[test]
fn a_checker_file_with_the_wrong_shapes_is_a_typed_error() {
    // The tiny checker's weights read with SD 1.5's config (no config.json beside a copy).
    let dir = tempdir("wrong-shape");
    let copy = dir.join("checker.safetensors");
    std::fs::copy(
        checker_dir().join("safety_checker/model.safetensors"),
        &copy,
    )
    .unwrap();
    let err = SafetyChecker::load(&CpuBackend::new(), &copy).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("expected") && text.contains("found"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unsupported_resample_filter_is_a_config_error() {
    let dir = tempdir("resample");
    let path = dir.join("preprocessor_config.json");
    std::fs::write(&path, r#"{"resample": 1, "size": 224, "crop_size": 224}"#).unwrap();
    let err = ClipImageProcessor::from_file(&path).unwrap_err();
    assert!(
        matches!(err, sd_core::Error::Config { ref field, .. } if field == "resample"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn resize_agrees_with_itself_per_axis() {
    // A horizontal-only and a vertical-only resize of a 1-pixel-high/wide strip equal the
    // corresponding rows/columns of a 2-D resize's first pass (Pillow resamples axes apart).
    let strip: Vec<u8> = (0..40u8).flat_map(|v| [v * 6, 255 - v * 6, v]).collect();
    let wide = resize(&strip, (40, 1), 3, (17, 1), ResampleFilter::Bicubic).unwrap();
    let tall = resize(&strip, (1, 40), 3, (1, 17), ResampleFilter::Bicubic).unwrap();
    assert_eq!(wide, tall);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-clip-safety-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
