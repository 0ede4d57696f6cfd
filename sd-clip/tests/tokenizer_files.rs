//! Loading tokenizers from files: the embedded vocabulary, diffusers folders, and broken folders.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::path::{Path, PathBuf};

use sd_clip::ClipTokenizer;
use sd_core::Error;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data");

/// A fresh scratch folder under the target dir, named for the test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_data(dir: &Path, file: &str) {
    std::fs::copy(Path::new(DATA).join(file), dir.join(file)).unwrap();
}

#[test]
fn embedded_vocabulary_gives_the_ids_in_its_source_note() {
    // data/SOURCE.md: "a photo of a cat" -> [49406, 320, 1125, 539, 320, 2368, 49407].
    let tokenizer = ClipTokenizer::sd15().unwrap();
    assert_eq!(tokenizer.start_id(), 49406);
    assert_eq!(tokenizer.end_id(), 49407);
    assert_eq!(tokenizer.vocab_size(), 49408);
    let ids = tokenizer.encode_padded("a photo of a cat", 77).unwrap();
    assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids[7..].iter().all(|&id| id == 49407));
    assert_eq!(ids.len(), 77);
}

#[test]
fn folder_with_vocab_and_merges_loads_like_the_embedded_one() {
    let dir = scratch_dir("vocab_and_merges");
    copy_data(&dir, "vocab.json");
    copy_data(&dir, "merges.txt");
    let from_folder = ClipTokenizer::from_folder(&dir).unwrap();
    let embedded = ClipTokenizer::sd15().unwrap();
    let text = "An astronaut riding a horse, 4k, (detailed:1.2) — ünïcödé";
    assert_eq!(
        from_folder.tokenize(text).unwrap(),
        embedded.tokenize(text).unwrap()
    );
}

#[test]
fn encode_padded_truncates_to_the_length_and_keeps_the_end_token() {
    let tokenizer = ClipTokenizer::sd15().unwrap();
    let words = "cat ".repeat(100);
    let ids = tokenizer.encode_padded(&words, 77).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
    assert!(ids[1..76].iter().all(|&id| id == ids[1] && id != 49407));
    assert!(matches!(
        tokenizer.encode_padded("cat", 1),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn broken_vocab_json_is_a_typed_error_naming_the_file() {
    let dir = scratch_dir("broken_vocab");
    std::fs::write(dir.join("vocab.json"), "{\"a\": 0, \"b\": ").unwrap();
    copy_data(&dir, "merges.txt");
    match ClipTokenizer::from_folder(&dir) {
        Err(Error::InvalidTokenizer { path, .. }) => assert_eq!(path, dir.join("vocab.json")),
        other => panic!("expected InvalidTokenizer, got {other:?}"),
    }
}

#[test]
fn missing_merges_txt_is_an_io_error_naming_the_file() {
    let dir = scratch_dir("missing_merges");
    copy_data(&dir, "vocab.json");
    match ClipTokenizer::from_folder(&dir) {
        Err(Error::Io { path, .. }) => assert_eq!(path, dir.join("merges.txt")),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn merges_of_tokens_the_vocab_lacks_are_a_typed_error() {
    let dir = scratch_dir("merge_out_of_vocab");
    copy_data(&dir, "vocab.json");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\nzq\u{2603} xy\n").unwrap();
    match ClipTokenizer::from_folder(&dir) {
        Err(Error::InvalidTokenizer { path, reason }) => {
            assert_eq!(path, dir.join("merges.txt"));
            assert!(reason.contains("zq"), "{reason}");
        }
        other => panic!("expected InvalidTokenizer, got {other:?}"),
    }
}

#[test]
fn malformed_merge_line_is_a_typed_error_with_its_line_number() {
    let dir = scratch_dir("malformed_merges");
    copy_data(&dir, "vocab.json");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\ni n\nt h e\n").unwrap();
    match ClipTokenizer::from_folder(&dir) {
        Err(Error::InvalidTokenizer { reason, .. }) => {
            assert!(reason.contains("line 3"), "{reason}")
        }
        other => panic!("expected InvalidTokenizer, got {other:?}"),
    }
}

#[test]
fn vocab_without_special_tokens_is_a_typed_error() {
    let dir = scratch_dir("no_specials");
    std::fs::write(dir.join("vocab.json"), r#"{"a": 0, "b": 1, "ab": 2}"#).unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\na b\n").unwrap();
    match ClipTokenizer::from_folder(&dir) {
        Err(Error::InvalidTokenizer { reason, .. }) => {
            assert!(reason.contains("<|startoftext|>"), "{reason}")
        }
        other => panic!("expected InvalidTokenizer, got {other:?}"),
    }
}

#[test]
fn corrupt_tokenizer_json_is_a_typed_error() {
    let dir = scratch_dir("corrupt_tokenizer_json");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    match ClipTokenizer::from_folder(&dir) {
        Err(Error::InvalidTokenizer { path, .. }) => assert_eq!(path, dir.join("tokenizer.json")),
        other => panic!("expected InvalidTokenizer, got {other:?}"),
    }
}

#[test]
fn tokenizer_json_folder_loads_and_prefers_tokenizer_json() {
    let dir = scratch_dir("tokenizer_json");
    let embedded = ClipTokenizer::sd15().unwrap();
    std::fs::write(dir.join("tokenizer.json"), embedded.to_json().unwrap()).unwrap();
    // A broken vocab.json beside it is not read: tokenizer.json wins, as in transformers.
    std::fs::write(dir.join("vocab.json"), "not json").unwrap();
    let loaded = ClipTokenizer::from_folder(&dir).unwrap();
    let text = "A castle on a hill at dawn, trending on artstation, 8k";
    assert_eq!(
        loaded.tokenize(text).unwrap(),
        embedded.tokenize(text).unwrap()
    );
    assert_eq!(loaded.end_id(), 49407);
}
