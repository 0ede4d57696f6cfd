//! Textual-inversion embeddings against their references (`fixtures/goldens/embeddings.json`,
//! written by `tools/fixturegen/embeddings.py`): the files load to the vectors torch reads,
//! plain-mode generations match diffusers' `load_textual_inversion` runs, A1111 mode gives the
//! same images for prompts both modes read alike, and every kind of bad file is refused by name.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::{Path, PathBuf};

use sd_core::Error;
use sd_core::weights::SafetensorsFile;
use serde_json::Value;
use stable_diffusion::embeddings;
use stable_diffusion::{GenerationRequest, LoadOptions, PromptMode, StableDiffusion};
use support::{assert_matches_goldens, fixtures, goldens};

const MODELS: [&str; 2] = ["tiny-sd", "tiny-sd-alt"];
/// The files every run loads, in this order (file-name order, as `--embedding-dir` reads them).
const LOADED: [&str; 3] = ["duo.safetensors", "singlet.safetensors", "trio.pt"];

fn files(model: &str) -> PathBuf {
    fixtures().join("embeddings").join(model)
}

fn bad(name: &str) -> PathBuf {
    fixtures().join("embeddings").join("bad").join(name)
}

fn runs() -> Value {
    let text = std::fs::read_to_string(goldens().join("embeddings.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["runs"].clone()
}

fn golden(model: &str, key: &str) -> sd_core::HostTensor {
    SafetensorsFile::open(goldens().join(model).join("embeddings.safetensors"))
        .unwrap()
        .get(key)
        .unwrap()
}

fn load_with_embeddings(model: &str) -> StableDiffusion<sd_core::cpu::CpuBackend> {
    let mut options = LoadOptions::default();
    for file in LOADED {
        options = options.embedding(files(model).join(file));
    }
    StableDiffusion::load(fixtures().join(model), options).unwrap()
}

#[test]
fn every_file_format_loads_the_vectors_torch_reads() {
    for model in MODELS {
        for (file, vectors) in [
            ("duo.safetensors", 2),     // emb_params, f16
            ("singlet.safetensors", 1), // {"<singlet>": [width]}
            ("trio.pt", 3),             // A1111 string_to_param, torch.save
            ("quartet.bin", 4),         // ParameterDict (textual_inversion), f16
        ] {
            let path = files(model).join(file);
            let embedding = embeddings::load(&path).unwrap();
            let stem = path.file_stem().unwrap().to_str().unwrap();
            assert_eq!(embedding.name(), stem);
            assert_eq!(embedding.len(), vectors, "{model} {file}");
            let expected = golden(model, &format!("{stem}/vectors"));
            assert_eq!(
                embedding.vectors().shape(),
                expected.shape(),
                "{model} {file}"
            );
            // Bit for bit: both convert the stored f16/f32 values to f32.
            assert!(
                embedding
                    .vectors()
                    .iter()
                    .zip(expected.iter())
                    .all(|(a, b)| a == b),
                "{model} {file}: vectors differ from torch's"
            );
            assert_eq!(embedding.source(), Some(path.as_path()));
        }
    }
}

fn run(model: &str, key: &str, mode: PromptMode, sd: &StableDiffusion<sd_core::cpu::CpuBackend>) {
    let spec = &runs()[model][key];
    let request = GenerationRequest::new(spec["prompt"].as_str().unwrap())
        .negative_prompt(spec["negative_prompt"].as_str().unwrap())
        .steps(spec["num_inference_steps"].as_u64().unwrap() as usize)
        .guidance_scale(spec["guidance_scale"].as_f64().unwrap() as f32)
        .seed(spec["seed"].as_u64().unwrap())
        .scheduler(spec["sampler"].as_str().unwrap())
        .prompt_mode(mode);
    let generation = sd.generate(&request).unwrap();
    let latents = golden(model, spec["latents_key"].as_str().unwrap());
    let png = goldens().join(model).join(spec["png"].as_str().unwrap());
    assert_matches_goldens(
        &format!("{model} {key} {mode:?}"),
        &generation,
        &latents,
        &[png],
    );
}

/// Plain mode is diffusers' `load_textual_inversion(file, token=stem)`: single- and
/// multi-vector embeddings, in the prompt and in the negative prompt.
#[test]
fn plain_mode_matches_diffusers_load_textual_inversion() {
    let mut checked = 0;
    for model in MODELS {
        let sd = load_with_embeddings(model);
        for key in runs()[model].as_object().unwrap().keys() {
            run(model, key, PromptMode::Plain, &sd);
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} runs");
}

/// These prompts have no emphasis and fit one chunk: A1111 mode puts each embedding's vectors
/// where diffusers' added tokens go, so it must give the same images.
#[test]
fn a1111_mode_places_the_vectors_where_diffusers_does() {
    for model in MODELS {
        let sd = load_with_embeddings(model);
        for key in runs()[model].as_object().unwrap().keys() {
            run(model, key, PromptMode::A1111, &sd);
        }
    }
}

#[test]
fn the_embeddings_a_request_uses_are_listed_for_the_infotext() {
    let sd = load_with_embeddings("tiny-sd");
    let request = GenerationRequest::new("trio astronaut, singlet").negative_prompt("duo, trio");
    let used: Vec<String> = sd
        .embeddings_used(&request)
        .unwrap()
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    assert_eq!(used, ["trio", "singlet", "duo"]);
    let none = sd
        .embeddings_used(&GenerationRequest::new("an astronaut"))
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_folder_loads_its_embeddings_and_reports_the_files_it_skips() {
    let dir = fixtures().join("embeddings").join("tiny-sd");
    let found = embeddings::load_dir(&dir).unwrap();
    let names: Vec<&str> = found.loaded.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["duo", "quartet", "singlet", "trio"]);
    assert!(found.skipped.is_empty());

    // The bad folder: os_system.pt and sdxl.safetensors cannot be read; wide.safetensors reads
    // but is 1024 wide, so loading it onto a model skips it too.
    let sd = StableDiffusion::load(
        fixtures().join("tiny-sd"),
        LoadOptions::default().embedding_dir(bad("")),
    )
    .unwrap();
    assert!(sd.embeddings().is_empty());
    let mut skipped: Vec<String> = sd
        .skipped_embeddings()
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        ["os_system.pt", "sdxl.safetensors", "wide.safetensors"]
    );
}

/// Asserts `error`'s message names every needle.
fn assert_names(error: &Error, needles: &[&str]) {
    let message = error.to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "`{needle}` missing from: {message}"
        );
    }
}

#[test]
fn a_pickle_that_calls_os_system_is_refused_naming_the_global() {
    let path = bad("os_system.pt");
    let error = embeddings::load(&path).unwrap_err();
    match &error {
        Error::ForbiddenPickleGlobal { path: p, global } => {
            assert_eq!(p, &path);
            assert_eq!(global, "os.system");
        }
        other => panic!("expected ForbiddenPickleGlobal, got {other:?}"),
    }
    assert_names(&error, &["os_system.pt", "os.system", "nothing was run"]);
}

#[test]
fn an_embedding_of_another_width_is_refused_naming_file_and_widths() {
    let error = StableDiffusion::load(
        fixtures().join("tiny-sd"),
        LoadOptions::default().embedding(bad("wide.safetensors")),
    )
    .unwrap_err();
    assert!(matches!(error, Error::InvalidEmbedding { .. }), "{error:?}");
    assert_names(&error, &["wide.safetensors", "1024", "32"]);
}

#[test]
fn an_sdxl_embedding_is_refused_as_such() {
    let error = embeddings::load(bad("sdxl.safetensors")).unwrap_err();
    assert!(matches!(error, Error::InvalidEmbedding { .. }), "{error:?}");
    assert_names(&error, &["sdxl.safetensors", "SDXL", "clip_l"]);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-rs-embeddings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

#[test]
fn a_truncated_pt_file_is_refused_naming_it() {
    let bytes = std::fs::read(files("tiny-sd").join("trio.pt")).unwrap();
    for keep in [10, bytes.len() / 2, bytes.len() - 1] {
        let path = write(&scratch(&format!("truncated-{keep}.pt")), &bytes[..keep]);
        let error = embeddings::load(&path).unwrap_err();
        assert!(matches!(error, Error::InvalidTorchFile { .. }), "{error:?}");
        assert_names(&error, &[&format!("truncated-{keep}.pt")]);
    }
}

#[test]
fn a_pt_file_whose_storage_is_cut_short_is_refused_naming_the_tensor() {
    // Shrink the storage entry's recorded size: the zip stays valid, the data does not fit.
    let mut bytes = std::fs::read(files("tiny-sd").join("trio.pt")).unwrap();
    let name = b"trio/data/0";
    let at = bytes.windows(name.len()).rposition(|w| w == name).unwrap(); // the central directory's copy of the name
    let header = at - 46;
    bytes[header + 24..header + 28].copy_from_slice(&8u32.to_le_bytes());
    bytes[header + 20..header + 24].copy_from_slice(&8u32.to_le_bytes());
    let path = write(&scratch("short-storage.pt"), &bytes);
    let error = embeddings::load(&path).unwrap_err();
    assert!(matches!(error, Error::InvalidTorchFile { .. }), "{error:?}");
    assert_names(&error, &["short-storage.pt", "tensor *", "storage"]);
}

#[test]
fn files_that_are_no_embedding_are_refused_naming_them() {
    let garbage = write(&scratch("garbage.pt"), b"this is not an embedding at all");
    let error = embeddings::load(&garbage).unwrap_err();
    assert!(matches!(error, Error::InvalidEmbedding { .. }), "{error:?}");
    assert_names(&error, &["garbage.pt", "neither"]);

    let empty = write(&scratch("empty.safetensors"), b"");
    assert_names(
        &embeddings::load(&empty).unwrap_err(),
        &["empty.safetensors"],
    );

    let missing = scratch("missing.pt");
    let error = embeddings::load(&missing).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert_names(&error, &["missing.pt"]);

    // A safetensors file of two unrelated tensors: which one is the embedding?
    let two = scratch("two.safetensors");
    let tensor = |values: &[f32]| {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes
    };
    let (a, b) = (tensor(&[1.0, 2.0]), tensor(&[3.0, 4.0]));
    let views = [
        (
            "first",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &a).unwrap(),
        ),
        (
            "second",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &b).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &two).unwrap();
    assert_names(
        &embeddings::load(&two).unwrap_err(),
        &["two.safetensors", "first, second"],
    );

    // A 3-D tensor is no list of vectors.
    let cube = scratch("cube.safetensors");
    let data = tensor(&[0.0; 8]);
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2, 2], &data)
        .unwrap();
    safetensors::serialize_to_file([("emb_params", view)], None, &cube).unwrap();
    assert_names(
        &embeddings::load(&cube).unwrap_err(),
        &["cube.safetensors", "emb_params", "[2, 2, 2]"],
    );
}

#[test]
fn two_embeddings_of_one_name_are_refused() {
    let path = files("tiny-sd").join("trio.pt");
    let error = StableDiffusion::load(
        fixtures().join("tiny-sd"),
        LoadOptions::default().embedding(&path).embedding(&path),
    )
    .unwrap_err();
    assert_names(&error, &["trio"]);
}

#[test]
fn embeddings_survive_a_change_of_loras_and_can_be_replaced() {
    let sd = load_with_embeddings("tiny-sd");
    let rebuilt = sd.with_loras(sd_core::cpu::CpuBackend::new(), &[]).unwrap();
    assert_eq!(rebuilt.embeddings().len(), 3);
    rebuilt.set_embeddings(Vec::new()).unwrap();
    assert!(rebuilt.embeddings().is_empty());
    // A set that does not fit is refused and leaves the old one in place.
    let wide = embeddings::load(bad("wide.safetensors")).unwrap();
    assert!(sd.set_embeddings(vec![wide]).is_err());
    assert_eq!(sd.embeddings().len(), 3);
}
