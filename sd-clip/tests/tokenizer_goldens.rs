//! Token ids against transformers 5's `CLIPTokenizer` (fixtures/goldens/tokenizer.json, written
//! by tools/make_fixtures.py).

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_clip::ClipTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Goldens {
    max_length: usize,
    bos_token_id: u32,
    eos_token_id: u32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    /// `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`.
    input_ids: Vec<u32>,
    /// `tokenizer(prompt)`: start and end tokens, no padding, no truncation.
    untruncated_ids: Vec<u32>,
}

use sd_testkit::fixtures;

fn goldens() -> Goldens {
    let path = fixtures().join("goldens/tokenizer.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} (run tools/make_fixtures.py): {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn assert_matches_goldens(tokenizer: &ClipTokenizer) {
    let goldens = goldens();
    assert!(
        goldens.cases.len() >= 60,
        "the corpus has {} prompts",
        goldens.cases.len()
    );
    assert_eq!(tokenizer.start_id(), goldens.bos_token_id);
    assert_eq!(tokenizer.end_id(), goldens.eos_token_id);
    for case in &goldens.cases {
        let padded = tokenizer
            .encode_padded(&case.prompt, goldens.max_length)
            .unwrap();
        assert_eq!(padded, case.input_ids, "padded ids of {:?}", case.prompt);
        let mut unpadded = vec![tokenizer.start_id()];
        unpadded.extend(tokenizer.tokenize(&case.prompt).unwrap());
        unpadded.push(tokenizer.end_id());
        assert_eq!(unpadded, case.untruncated_ids, "ids of {:?}", case.prompt);
    }
}

#[test]
fn embedded_tokenizer_gives_transformers_ids_for_the_whole_corpus() {
    assert_matches_goldens(&ClipTokenizer::sd15().unwrap());
}

#[test]
fn fixture_tokenizer_folder_gives_transformers_ids_for_the_whole_corpus() {
    let tokenizer = ClipTokenizer::from_folder(fixtures().join("tiny-sd/tokenizer")).unwrap();
    assert_matches_goldens(&tokenizer);
}
