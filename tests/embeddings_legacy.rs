//! Embeddings in torch's legacy (pre-1.6) serialisation, and `--embedding-dir` sub-folders.
//! The files come from `tools/fixturegen/embeddings_legacy.py`: the tiny-sd `trio.pt` saved
//! again by torch with `_use_new_zipfile_serialization=False`, one folder down, and a legacy
//! file whose pickle calls `os.system`.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use std::path::PathBuf;

use sd_core::Error;
use stable_diffusion::embeddings;
use support::cli::{assert_fails_naming, path_arg, scratch, sd, stdout};
use support::fixtures;

fn legacy() -> PathBuf {
    fixtures().join("embeddings").join("legacy")
}

#[test]
fn a_legacy_pt_file_reads_the_vectors_of_its_zip_twin() {
    let zip = embeddings::load(fixtures().join("embeddings/tiny-sd/trio.pt")).unwrap();
    let old = embeddings::load(legacy().join("tiny-sd/nested/trio.pt")).unwrap();
    assert_eq!(old.name(), "trio");
    assert_eq!(old.vectors(), zip.vectors());
}

#[test]
fn a_legacy_pickle_that_calls_os_system_is_refused_naming_the_global() {
    let path = legacy().join("os_system.pt");
    match embeddings::load(&path).unwrap_err() {
        Error::ForbiddenPickleGlobal { path: p, global } => {
            assert_eq!(p, path);
            assert_eq!(global, "os.system");
        }
        other => panic!("expected ForbiddenPickleGlobal, got {other:?}"),
    }
}

#[test]
fn a_truncated_legacy_file_is_refused_naming_it() {
    let bytes = std::fs::read(legacy().join("tiny-sd/nested/trio.pt")).unwrap();
    let dir = scratch("legacy-truncated");
    for keep in [20, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.join(format!("cut-{keep}.pt"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let error = embeddings::load(&path).unwrap_err();
        assert!(matches!(error, Error::InvalidTorchFile { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&format!("cut-{keep}.pt")),
            "{error}"
        );
    }
}

#[test]
fn an_embedding_folder_is_walked_into_its_sub_folders() {
    let found = embeddings::load_dir(legacy().join("tiny-sd")).unwrap();
    let names: Vec<&str> = found.loaded.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["trio"]);
    // The CLI finds it there too: `sd tokenize` shows its three vectors.
    let run = sd(&[
        "tokenize",
        "a trio",
        "--json",
        "--embedding-dir",
        path_arg(&legacy().join("tiny-sd")),
        // tiny-sd's tokenizer and width (SD 1.5's would skip a 32-wide embedding).
        "--model",
        path_arg(&fixtures().join("tiny-sd")),
    ]);
    let printed: serde_json::Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(printed["vectors"].as_array().unwrap().len(), 3, "{printed}");
}

#[test]
fn two_files_of_one_name_in_a_folder_are_refused_naming_both() {
    let dir = scratch("legacy-duplicates");
    let source = fixtures().join("embeddings/tiny-sd/duo.safetensors");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::copy(&source, dir.join(sub).join("duo.safetensors")).unwrap();
    }
    let error = embeddings::load_dir(&dir).unwrap_err().to_string();
    for needle in ["a/duo.safetensors", "b/duo.safetensors", "duo"] {
        assert!(error.contains(needle), "`{needle}` missing from: {error}");
    }
    let run = sd(&["tokenize", "duo", "--embedding-dir", path_arg(&dir)]);
    assert_fails_naming(&run, &["a/duo.safetensors", "b/duo.safetensors"]);
}
