//! `sd tokenize "prompt"`: the tokens a prompt becomes, and how many (the 75-per-chunk budget).

use sd_clip::{ClipTextConfig, ClipTokenizer, PromptChunk, PromptChunker, PromptMode};
use std::fmt::Write;

use sd_core::{Error, Result};

use crate::cli::TokenizeArgs;
use crate::stdout::print;

/// SD 1.5's CLIP positions minus the start and end tokens.
const SD15_TOKENS_PER_CHUNK: usize = 75;

pub fn run(args: TokenizeArgs) -> Result<()> {
    let (tokenizer, tokens_per_chunk) = match &args.model {
        Some(dir) if dir.is_dir() => {
            let tokenizer = ClipTokenizer::from_folder(dir.join("tokenizer"))?;
            let config = ClipTextConfig::from_file(dir.join("text_encoder").join("config.json"))?;
            (tokenizer, config.max_position_embeddings.saturating_sub(2))
        }
        Some(path) if !path.exists() => {
            return Err(Error::invalid_argument(
                "--model",
                format!("{} does not exist", path.display()),
            ));
        }
        Some(file) => {
            eprintln!(
                "sd: {} is a single file, which carries no tokenizer: using SD 1.5's",
                file.display()
            );
            (ClipTokenizer::sd15()?, SD15_TOKENS_PER_CHUNK)
        }
        None => (ClipTokenizer::sd15()?, SD15_TOKENS_PER_CHUNK),
    };
    let mode = if args.plain_prompt {
        PromptMode::Plain
    } else {
        PromptMode::A1111
    };
    let chunker = PromptChunker::new(tokenizer.clone(), tokens_per_chunk);
    let chunks: Vec<PromptChunk> = chunker
        .chunks(&args.prompt, mode)?
        .into_iter()
        .map(|chunk| unpadded(chunk, tokenizer.end_id()))
        .collect();
    let count: usize = chunks.iter().map(|c| c.ids.len().saturating_sub(2)).sum();

    // Written as one text: a closed pipe or a full device is then one error, not a panic.
    let mut out = String::new();
    if args.json {
        let ids: Vec<u32> = chunks.iter().flat_map(|c| c.ids.iter().copied()).collect();
        let _ = writeln!(out, "{}", serde_json::json!({ "ids": ids, "count": count }));
        return print(&out);
    }
    for (index, chunk) in chunks.iter().enumerate() {
        if chunks.len() > 1 {
            let _ = writeln!(out, "chunk {}:", index + 1);
        }
        for (&id, &weight) in chunk.ids.iter().zip(&chunk.weights) {
            let token = tokenizer.token(id).unwrap_or_else(|| "?".to_string());
            if weight == 1.0 {
                let _ = writeln!(out, "  {token:<24} {id:>6}");
            } else {
                let _ = writeln!(out, "  {token:<24} {id:>6}  weight {weight}");
            }
        }
    }
    let chunk_word = if chunks.len() == 1 { "chunk" } else { "chunks" };
    let _ = writeln!(
        out,
        "{count} tokens ({} {chunk_word} of up to {tokens_per_chunk})",
        chunks.len()
    );
    if mode == PromptMode::Plain {
        let full = tokenizer.tokenize(&args.prompt)?.len();
        if full > count {
            let _ = writeln!(
                out,
                "{} tokens past the first {tokens_per_chunk} are dropped in plain mode",
                full - count
            );
        }
    }
    print(&out)
}

/// A chunk without its padding: the start token, the prompt's tokens and one end token.
fn unpadded(mut chunk: PromptChunk, end_id: u32) -> PromptChunk {
    // The chunk is start, tokens, end, then end tokens as padding.
    let mut len = chunk.ids.len();
    while len > 2 && chunk.ids[len - 1] == end_id && chunk.ids[len - 2] == end_id {
        len -= 1;
    }
    chunk.ids.truncate(len);
    chunk.weights.truncate(len);
    chunk
}
