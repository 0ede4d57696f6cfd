//! Laying prompts into 77-token chunks, A1111's way and diffusers' way.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_clip::ClipTokenizer;
use sd_clip::chunks::{PromptChunk, PromptChunker, PromptMode, TokenPiece};

const START: u32 = 49406;
const END: u32 = 49407;

fn chunker() -> PromptChunker {
    PromptChunker::new(ClipTokenizer::sd15().unwrap(), 75)
}

fn ids_of(chunker: &PromptChunker, text: &str) -> Vec<u32> {
    chunker.tokenizer().tokenize(text).unwrap()
}

/// The prompt tokens of a chunk: between the start token and the first end token.
fn body(chunk: &PromptChunk) -> &[u32] {
    assert_eq!(chunk.ids.len(), 77);
    assert_eq!(chunk.ids[0], START);
    assert_eq!(chunk.ids[76], END);
    let end = chunk.ids[1..].iter().position(|&id| id == END).unwrap() + 1;
    assert!(
        chunk.ids[end..].iter().all(|&id| id == END),
        "padding is end tokens"
    );
    &chunk.ids[1..end]
}

#[test]
fn a_150_token_prompt_yields_two_chunks() {
    let chunker = chunker();
    let prompt = "cat ".repeat(150);
    assert_eq!(ids_of(&chunker, &prompt).len(), 150);
    let chunks = chunker.chunks(&prompt, PromptMode::A1111).unwrap();
    assert_eq!(chunks.len(), 2);
    for chunk in &chunks {
        // 75 prompt tokens fill the chunk: start, 75 × cat, end.
        assert_eq!(chunk.ids[1..76], [2368; 75]);
        assert!(chunk.is_unweighted());
    }
}

#[test]
fn chunk_count_steps_at_75_tokens() {
    let chunker = chunker();
    for (words, expected) in [(0, 1), (1, 1), (75, 1), (76, 2), (150, 2), (151, 3)] {
        let prompt = "cat ".repeat(words);
        let chunks = chunker.chunks(&prompt, PromptMode::A1111).unwrap();
        assert_eq!(chunks.len(), expected, "{words} words");
    }
}

#[test]
fn short_plain_prompt_is_the_same_chunk_in_both_modes() {
    let chunker = chunker();
    let prompt = "a photo of an astronaut riding a horse on mars";
    let a1111 = chunker.chunks(prompt, PromptMode::A1111).unwrap();
    let plain = chunker.chunks(prompt, PromptMode::Plain).unwrap();
    assert_eq!(a1111, plain);
    assert_eq!(
        plain[0].ids,
        chunker.tokenizer().encode_padded(prompt, 77).unwrap()
    );
}

#[test]
fn plain_mode_keeps_brackets_and_truncates_to_one_chunk() {
    let chunker = chunker();
    let plain = chunker
        .chunks("(cat:1.5) BREAK dog", PromptMode::Plain)
        .unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(body(&plain[0]), ids_of(&chunker, "(cat:1.5) BREAK dog"));
    let long = chunker
        .chunks(&"cat ".repeat(150), PromptMode::Plain)
        .unwrap();
    assert_eq!(long.len(), 1);
    assert_eq!(body(&long[0]).len(), 75);
}

#[test]
fn emphasis_weights_land_on_their_tokens() {
    let chunker = chunker();
    let chunks = chunker
        .chunks("a (red:1.5) [ball]", PromptMode::A1111)
        .unwrap();
    assert_eq!(chunks.len(), 1);
    let chunk = &chunks[0];
    let expected_ids = [
        ids_of(&chunker, "a"),
        ids_of(&chunker, "red"),
        ids_of(&chunker, "ball"),
    ]
    .concat();
    assert_eq!(body(chunk), expected_ids);
    assert_eq!(chunk.weights[..4], [1.0, 1.0, 1.5, (1.0 / 1.1f64) as f32]);
    assert!(chunk.weights[4..].iter().all(|&w| w == 1.0));
}

#[test]
fn weight_one_is_the_same_chunk_as_no_syntax() {
    let chunker = chunker();
    assert_eq!(
        chunker.chunks("(cat:1.0)", PromptMode::A1111).unwrap(),
        chunker.chunks("cat", PromptMode::A1111).unwrap()
    );
}

#[test]
fn break_starts_a_new_chunk() {
    let chunker = chunker();
    let chunks = chunker
        .chunks("a cat BREAK a dog", PromptMode::A1111)
        .unwrap();
    assert_eq!(chunks.len(), 2);
    assert_eq!(body(&chunks[0]), ids_of(&chunker, "a cat"));
    assert_eq!(body(&chunks[1]), ids_of(&chunker, "a dog"));
    // A leading BREAK closes an empty first chunk, as in A1111.
    let chunks = chunker.chunks("BREAK dog", PromptMode::A1111).unwrap();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0], chunker.empty_chunk());
}

#[test]
fn empty_prompt_is_the_empty_chunk() {
    let chunker = chunker();
    let chunks = chunker.chunks("", PromptMode::A1111).unwrap();
    assert_eq!(chunks, vec![chunker.empty_chunk()]);
    assert_eq!(body(&chunks[0]), &[] as &[u32]);
}

#[test]
fn a_full_chunk_breaks_after_a_recent_comma() {
    let chunker = chunker();
    let comma = chunker.tokenizer().token_id(",</w>").unwrap();
    let cat = 2368;
    // 70 cats, a comma, 10 dogs: the chunk fills at the 4th dog; the comma is 5 back, so the 4
    // dogs after it move to the next chunk.
    let dog = ids_of(&chunker, "dog")[0];
    let pieces = [TokenPiece::Tokens {
        ids: [vec![cat; 70], vec![comma], vec![dog; 10]].concat(),
        weight: 1.0,
    }];
    let chunks = chunker.chunk_tokens(&pieces);
    assert_eq!(chunks.len(), 2);
    assert_eq!(body(&chunks[0]), [vec![cat; 70], vec![comma]].concat());
    assert_eq!(body(&chunks[1]), vec![dog; 10]);

    // With backtracking off, the chunk is cut at 75 tokens.
    let chunks = chunker
        .clone()
        .with_comma_backtrack(0)
        .chunk_tokens(&pieces);
    assert_eq!(
        body(&chunks[0]),
        [vec![cat; 70], vec![comma], vec![dog; 4]].concat()
    );
    assert_eq!(body(&chunks[1]), vec![dog; 6]);
}

#[test]
fn a_comma_too_far_back_does_not_move_words() {
    let chunker = chunker();
    let comma = chunker.tokenizer().token_id(",</w>").unwrap();
    // The comma sits 25 tokens before the chunk fills: more than 20, so a plain cut at 75.
    let pieces = [TokenPiece::Tokens {
        ids: [vec![2368; 50], vec![comma], vec![2368; 40]].concat(),
        weight: 1.0,
    }];
    let chunks = chunker.chunk_tokens(&pieces);
    assert_eq!(body(&chunks[0]).len(), 75);
    assert_eq!(body(&chunks[1]).len(), 16);
}

#[test]
fn moved_words_keep_their_weights() {
    let chunker = chunker();
    let comma = chunker.tokenizer().token_id(",</w>").unwrap();
    let pieces = [
        TokenPiece::Tokens {
            ids: [vec![2368; 72], vec![comma]].concat(),
            weight: 1.0,
        },
        TokenPiece::Tokens {
            ids: vec![2368; 5],
            weight: 1.25,
        },
    ];
    let chunks = chunker.chunk_tokens(&pieces);
    assert_eq!(chunks.len(), 2);
    assert_eq!(body(&chunks[0]).len(), 73);
    assert_eq!(
        chunks[1].weights[..7],
        [1.0, 1.25, 1.25, 1.25, 1.25, 1.25, 1.0]
    );
}
