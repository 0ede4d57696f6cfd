//! Where textual-inversion vectors go, against layouts derived by hand from A1111's
//! `tokenize_line` / `find_embedding_at_position` and from diffusers' `load_textual_inversion`
//! (the plain-mode ids checked in a diffusers session on the SD 1.5 tokenizer:
//! `load_textual_inversion({"emb_params": [3, w]}, token="mystyle")` then "a MyStyle photo" →
//! `[49406, 320, 49408, 1125, 49407]`: the text rewrite is case-sensitive, the token match is not).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use ndarray::Array2;
use sd_clip::chunks::EMBEDDING_PLACEHOLDER_ID;
use sd_clip::{
    ClipTokenizer, PromptChunk, PromptChunker, PromptEmbeddings, PromptMode, TextualInversion,
};
use sd_core::Error;

const WIDTH: usize = 4;
const START: u32 = 49406;
const END: u32 = 49407;

fn embedding(name: &str, vectors: usize) -> TextualInversion {
    let values = Array2::from_shape_fn((vectors, WIDTH), |(i, j)| (i * WIDTH + j) as f32);
    TextualInversion::new(name, values).unwrap()
}

fn setup(embeddings: Vec<TextualInversion>) -> (PromptChunker, PromptEmbeddings) {
    let tokenizer = ClipTokenizer::sd15().unwrap();
    let prepared = PromptEmbeddings::new(&tokenizer, WIDTH, embeddings).unwrap();
    (PromptChunker::new(tokenizer, 75), prepared)
}

fn id(chunker: &PromptChunker, word: &str) -> u32 {
    let ids = chunker.tokenizer().tokenize(word).unwrap();
    assert_eq!(ids.len(), 1, "{word} is not one token");
    ids[0]
}

/// (position, embedding name, vector index) of a chunk's embedding positions.
fn vectors(chunk: &PromptChunk) -> Vec<(usize, String, usize)> {
    chunk
        .vectors
        .iter()
        .map(|v| (v.position, v.embedding.name().to_string(), v.index))
        .collect()
}

#[test]
fn a1111_replaces_the_name_by_its_vectors_in_place() {
    let (chunker, embeddings) = setup(vec![embedding("mystyle", 3)]);
    let chunks = chunker
        .chunks_with("a mystyle photo", PromptMode::A1111, &embeddings)
        .unwrap();
    assert_eq!(chunks.len(), 1);
    let p = EMBEDDING_PLACEHOLDER_ID;
    let (a, photo) = (id(&chunker, "a"), id(&chunker, "photo"));
    assert_eq!(chunks[0].ids[..7], [START, a, p, p, p, photo, END]);
    assert_eq!(
        vectors(&chunks[0]),
        [
            (2, "mystyle".into(), 0),
            (3, "mystyle".into(), 1),
            (4, "mystyle".into(), 2)
        ]
    );
    assert_eq!(chunks[0].vectors[1].values().to_vec(), [4.0, 5.0, 6.0, 7.0]);
    // The name's tokens are matched after lower-casing, like any text.
    let upper = chunker
        .chunks_with("a MyStyle photo", PromptMode::A1111, &embeddings)
        .unwrap();
    assert_eq!(upper, chunks);
}

#[test]
fn a1111_emphasis_applies_to_every_vector() {
    let (chunker, embeddings) = setup(vec![embedding("mystyle", 3)]);
    let chunks = chunker
        .chunks_with("(mystyle:1.2) photo", PromptMode::A1111, &embeddings)
        .unwrap();
    assert_eq!(chunks[0].weights[..6], [1.0, 1.2, 1.2, 1.2, 1.0, 1.0]);
    assert_eq!(vectors(&chunks[0]).len(), 3);
}

#[test]
fn a1111_moves_an_embedding_that_does_not_fit_to_the_next_chunk() {
    let (chunker, embeddings) = setup(vec![embedding("mystyle", 3)]);
    let a = id(&chunker, "a");
    // 73 tokens leave 2 places: the 3 vectors start chunk 2.
    let prompt = format!("{}mystyle", "a ".repeat(73));
    let chunks = chunker
        .chunks_with(&prompt, PromptMode::A1111, &embeddings)
        .unwrap();
    assert_eq!(chunks.len(), 2);
    assert!(chunks[0].ids[1..74].iter().all(|&i| i == a));
    assert!(chunks[0].ids[74..].iter().all(|&i| i == END), "padded");
    assert!(chunks[0].vectors.is_empty());
    assert_eq!(
        vectors(&chunks[1]),
        [
            (1, "mystyle".into(), 0),
            (2, "mystyle".into(), 1),
            (3, "mystyle".into(), 2)
        ]
    );
    assert_eq!(chunks[1].ids[4], END);

    // 72 tokens leave exactly 3: one chunk, the vectors at 73..=75.
    let prompt = format!("{}mystyle", "a ".repeat(72));
    let chunks = chunker
        .chunks_with(&prompt, PromptMode::A1111, &embeddings)
        .unwrap();
    assert_eq!(chunks.len(), 1);
    let positions: Vec<usize> = chunks[0].vectors.iter().map(|v| v.position).collect();
    assert_eq!(positions, [73, 74, 75]);
    assert_eq!(chunks[0].ids[76], END);
}

#[test]
fn a1111_prefers_the_longest_name_and_ignores_near_misses() {
    let (chunker, embeddings) = setup(vec![embedding("foo", 1), embedding("foo bar", 2)]);
    let chunks = chunker
        .chunks_with("foo bar foo baz", PromptMode::A1111, &embeddings)
        .unwrap();
    assert_eq!(
        vectors(&chunks[0]),
        [
            (1, "foo bar".into(), 0),
            (2, "foo bar".into(), 1),
            (3, "foo".into(), 0)
        ]
    );
    assert_eq!(chunks[0].ids[4], id(&chunker, "baz"));
    // A word that only starts like the name is another token sequence.
    let none = chunker
        .chunks_with("food", PromptMode::A1111, &embeddings)
        .unwrap();
    assert!(none[0].vectors.is_empty());
}

#[test]
fn plain_mode_adds_diffusers_tokens_and_rewrites_the_name_case_sensitively() {
    let (chunker, embeddings) = setup(vec![embedding("mystyle", 3)]);
    let (a, photo) = (id(&chunker, "a"), id(&chunker, "photo"));
    let chunks = chunker
        .chunks_with("a mystyle photo", PromptMode::Plain, &embeddings)
        .unwrap();
    assert_eq!(
        chunks[0].ids[..7],
        [START, a, 49408, 49409, 49410, photo, END]
    );
    assert_eq!(vectors(&chunks[0]).len(), 3);
    // "MyStyle": the tokenizer still finds the added token, diffusers' text rewrite does not.
    let upper = chunker
        .chunks_with("a MyStyle photo", PromptMode::Plain, &embeddings)
        .unwrap();
    assert_eq!(upper[0].ids[..5], [START, a, 49408, photo, END]);
    assert_eq!(vectors(&upper[0]), [(2, "mystyle".into(), 0)]);
}

#[test]
fn plain_mode_refuses_a_name_the_vocabulary_has_as_diffusers_does() {
    let (chunker, embeddings) = setup(vec![embedding("style", 1)]);
    let error = chunker
        .chunks_with("a style", PromptMode::Plain, &embeddings)
        .unwrap_err();
    assert!(error.to_string().contains("style"), "{error}");
    // A1111 mode has no such limit.
    let chunks = chunker
        .chunks_with("a style", PromptMode::A1111, &embeddings)
        .unwrap();
    assert_eq!(vectors(&chunks[0]), [(2, "style".into(), 0)]);
}

#[test]
fn an_embedding_of_another_width_is_refused_naming_both_widths() {
    let tokenizer = ClipTokenizer::sd15().unwrap();
    let wide = TextualInversion::new("wide", Array2::zeros((2, 1024)))
        .unwrap()
        .with_source("embeddings/wide.safetensors");
    let error = PromptEmbeddings::new(&tokenizer, 768, vec![wide]).unwrap_err();
    assert!(matches!(error, Error::InvalidEmbedding { .. }), "{error:?}");
    let message = error.to_string();
    for needle in ["wide.safetensors", "1024", "768"] {
        assert!(
            message.contains(needle),
            "`{needle}` missing from: {message}"
        );
    }
    let too_many = TextualInversion::new("long", Array2::zeros((76, WIDTH))).unwrap();
    assert!(PromptEmbeddings::new(&tokenizer, WIDTH, vec![too_many]).is_err());
}
