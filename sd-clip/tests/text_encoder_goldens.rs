//! The CLIP text transformer against transformers' `CLIPTextModel` on the tiny fixture pipelines
//! (fixtures/goldens/<model>/clip.safetensors, written by tools/make_fixtures.py).

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::path::{Path, PathBuf};

use sd_clip::{ClipTextConfig, ClipTextEncoder, ClipTextTransformer, ClipTokenizer, PromptMode};
use sd_core::cpu::CpuBackend;
use sd_core::weights::{Component, LdmLayout, WeightStore};
use sd_core::{Backend, HostTensor};

/// f32 reimplementation vs the f32 reference on the same f16-stored weights: differences come
/// only from summation order (the bound).
const MAX_ABS_ERROR: f32 = 1e-4;

use sd_testkit::fixtures;

/// The tensors of a golden file: f32 ones as host tensors, i64 ones (token ids) as u32.
struct Goldens {
    bytes: Vec<u8>,
}

impl Goldens {
    fn open(model: &str) -> Self {
        let path = fixtures()
            .join("goldens")
            .join(model)
            .join("clip.safetensors");
        Self::open_file(&path, "tools/make_fixtures.py")
    }

    /// `script` is what writes the file, for the message when it is missing.
    fn open_file(path: &Path, script: &str) -> Self {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{} (run {script}): {e}", path.display()));
        Goldens { bytes }
    }

    fn f32(&self, name: &str) -> HostTensor {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        HostTensor::from_shape_vec(view.shape().to_vec(), data).unwrap()
    }

    fn ids(&self, name: &str) -> (Vec<u32>, Vec<usize>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name}");
        let ids = view
            .data()
            .chunks_exact(8)
            .map(|b| u32::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap())
            .collect();
        (ids, view.shape().to_vec())
    }
}

fn max_abs_diff(a: &HostTensor, b: &HostTensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn load_model(b: &CpuBackend, model: &str) -> ClipTextTransformer<CpuBackend> {
    let dir = fixtures().join(model);
    let config = ClipTextConfig::from_file(dir.join("text_encoder/config.json")).unwrap();
    let store = WeightStore::open(&dir).unwrap();
    ClipTextTransformer::load(b, &store.text_encoder().unwrap(), config).unwrap()
}

/// `last_hidden_state` (clip_skip 1) and diffusers' `clip_skip=1` prompt embeds (clip_skip 2).
fn check_model_against_goldens(model: &str) {
    let b = CpuBackend::new();
    check_against_goldens(&b, model, &load_model(&b, model), &Goldens::open(model));
}

fn check_against_goldens(
    b: &CpuBackend,
    model: &str,
    clip: &ClipTextTransformer<CpuBackend>,
    goldens: &Goldens,
) {
    let (ids, shape) = goldens.ids("input_ids");
    let batch = shape[0];

    let last = b
        .download(&clip.forward(b, &ids, batch, 1).unwrap())
        .unwrap();
    let err = max_abs_diff(&last, &goldens.f32("last_hidden_state"));
    println!("{model}: last_hidden_state max abs error {err:.3e}");
    assert!(
        err < MAX_ABS_ERROR,
        "{model}: last_hidden_state off by {err}"
    );

    let skip2 = b
        .download(&clip.forward(b, &ids, batch, 2).unwrap())
        .unwrap();
    let err = max_abs_diff(&skip2, &goldens.f32("prompt_embeds_clip_skip_1"));
    println!("{model}: clip_skip 2 (diffusers clip_skip=1) max abs error {err:.3e}");
    assert!(err < MAX_ABS_ERROR, "{model}: clip_skip 2 off by {err}");
}

#[test]
fn tiny_sd_matches_transformers_clip_text_model() {
    check_model_against_goldens("tiny-sd");
}

#[test]
fn tiny_sd_alt_matches_transformers_clip_text_model() {
    check_model_against_goldens("tiny-sd-alt");
}

#[test]
fn plain_mode_encoder_gives_the_pipeline_embeddings_from_prompt_text() {
    // The prompts of the golden (one over 77 tokens, one empty), tokenized by us: plain mode
    // must reproduce the pipeline's truncating tokenizer call and its embeddings.
    let b = CpuBackend::new();
    let models: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("goldens/models.json")).unwrap(),
    )
    .unwrap();
    for model in ["tiny-sd", "tiny-sd-alt"] {
        let prompts: Vec<String> =
            serde_json::from_value(models[format!("{model}/clip.safetensors")]["prompts"].clone())
                .unwrap();
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let encoder = ClipTextEncoder::load(&b, fixtures().join(model))
            .unwrap()
            .with_mode(PromptMode::Plain);
        let cond = b
            .download(&encoder.encode_prompts(&b, &prompts).unwrap())
            .unwrap();
        let err = max_abs_diff(&cond, &Goldens::open(model).f32("last_hidden_state"));
        assert!(
            err < MAX_ABS_ERROR,
            "{model}: plain-mode conditioning off by {err}"
        );
    }
}

#[test]
fn ldm_single_file_text_encoder_equals_the_diffusers_folder_one() {
    let b = CpuBackend::new();
    let config =
        ClipTextConfig::from_file(fixtures().join("tiny-sd/text_encoder/config.json")).unwrap();
    let store = WeightStore::open_single_file(
        fixtures().join("ldm/tiny-sd.safetensors"),
        &LdmLayout::sd15(),
    )
    .unwrap();
    let single =
        ClipTextEncoder::from_store(&b, &store, config, ClipTokenizer::sd15().unwrap()).unwrap();
    let folder = ClipTextEncoder::load(&b, fixtures().join("tiny-sd")).unwrap();
    let prompts = ["a (red:1.3) fox in the snow", ""];
    let a = b
        .download(&single.encode_prompts(&b, &prompts).unwrap())
        .unwrap();
    let c = b
        .download(&folder.encode_prompts(&b, &prompts).unwrap())
        .unwrap();
    assert_eq!(a, c);
}

/// The full-size SD 1.5 text encoder (random weights) against a golden made on demand:
/// `python tools/clip_goldens.py` writes target/clip-goldens/sd15/ (~250 MB),
/// or set `SD_CLIP_GOLDENS` to the folder it wrote. Then
/// `cargo test --release -p sd-clip --test text_encoder_goldens -- --ignored`.
#[test]
#[ignore = "needs tools/clip_goldens.py's 250 MB output"]
fn full_size_sd15_text_encoder_matches_transformers() {
    let dir = std::env::var_os("SD_CLIP_GOLDENS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/clip-goldens/sd15")
        });
    let config = ClipTextConfig::from_file(dir.join("text_encoder/config.json")).unwrap();
    assert_eq!(
        config,
        ClipTextConfig::sd15(),
        "SD 1.5's config is what single files get"
    );
    let store = WeightStore::open_component_files(
        Component::TextEncoder,
        &[dir.join("text_encoder/model.safetensors")],
    )
    .unwrap();
    let b = CpuBackend::new();
    let clip = ClipTextTransformer::load(&b, &store.text_encoder().unwrap(), config).unwrap();
    check_against_goldens(
        &b,
        "sd15",
        &clip,
        &Goldens::open_file(&dir.join("clip.safetensors"), "tools/clip_goldens.py"),
    );
}

#[test]
fn a1111_mode_gives_the_pipeline_embeddings_for_short_prompts_without_syntax() {
    // The golden's first three prompts are under 75 tokens and use no emphasis syntax.
    let b = CpuBackend::new();
    let models: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("goldens/models.json")).unwrap(),
    )
    .unwrap();
    for model in ["tiny-sd", "tiny-sd-alt"] {
        let prompts: Vec<String> =
            serde_json::from_value(models[format!("{model}/clip.safetensors")]["prompts"].clone())
                .unwrap();
        let prompts: Vec<&str> = prompts[..3].iter().map(String::as_str).collect();
        let encoder = ClipTextEncoder::load(&b, fixtures().join(model)).unwrap();
        assert_eq!(encoder.mode(), PromptMode::A1111);
        let cond = b
            .download(&encoder.encode_prompts(&b, &prompts).unwrap())
            .unwrap();
        let golden = Goldens::open(model).f32("last_hidden_state");
        let golden = golden.slice(ndarray::s![..3, .., ..]).to_owned().into_dyn();
        let err = max_abs_diff(&cond, &golden);
        assert!(
            err < MAX_ABS_ERROR,
            "{model}: A1111-mode conditioning off by {err}"
        );
    }
}
