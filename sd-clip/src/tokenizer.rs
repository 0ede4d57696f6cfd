//! The CLIP BPE tokenizer, giving the ids transformers 5's `CLIPTokenizer` gives.
//!
//! The pipeline is the one transformers builds for CLIP on the `tokenizers` library: NFC, runs of
//! whitespace collapsed to one space, lower case; a split into words, single digits and
//! punctuation runs; byte-level BPE with a `</w>` end-of-word suffix. There is no ftfy and no
//! HTML unescaping: older tokenizers that ran ftfy first (transformers 4 with ftfy installed,
//! OpenAI's `SimpleTokenizer`) give other ids for curly apostrophes (`’` → `'`), ligatures
//! (`ﬁ` → `fi`), full-width letters (`Ａ` → `a`) and HTML entities (`&amp;` → `&`).
//!
//! The SD 1.5 vocabulary (OpenAI's, MIT licence, see `data/SOURCE.md`) is embedded, so
//! single-file checkpoints, which carry no tokenizer, work offline.

use std::path::{Path, PathBuf};

use sd_core::{Error, Result};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{self, Lowercase, NFC, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

const EMBEDDED_VOCAB: &str = include_str!("../data/vocab.json");
const EMBEDDED_MERGES: &str = include_str!("../data/merges.txt");

/// The path errors about the embedded vocabulary name.
const EMBEDDED_DIR: &str = "<sd-clip embedded tokenizer>";

/// Marks the start of every encoded prompt (id 49406 in SD 1.5).
pub const START_OF_TEXT: &str = "<|startoftext|>";
/// Ends every encoded prompt and pads it to the model's length (id 49407 in SD 1.5).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// CLIP's word pattern: the two special tokens, English contractions, letter runs, single
/// digits, and runs of other non-space characters. Spaces are dropped (the split is inverted:
/// the matches are kept and the gaps removed).
const WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The CLIP BPE tokenizer.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    start_id: u32,
    end_id: u32,
}

impl ClipTokenizer {
    /// The SD 1.5 tokenizer (OpenAI's CLIP ViT-L/14 vocabulary), embedded in the crate.
    pub fn sd15() -> Result<Self> {
        let dir = Path::new(EMBEDDED_DIR);
        Self::from_vocab_and_merges(
            EMBEDDED_VOCAB,
            &dir.join("vocab.json"),
            EMBEDDED_MERGES,
            &dir.join("merges.txt"),
        )
    }

    /// The tokenizer of the diffusers pipeline folder `pipeline_dir`: its `tokenizer/` folder
    /// when it has one, else the embedded SD 1.5 tokenizer (what every SD 1.x pipeline ships).
    pub fn for_pipeline(pipeline_dir: impl AsRef<Path>) -> Result<Self> {
        let dir = pipeline_dir.as_ref().join("tokenizer");
        if dir.is_dir() {
            Self::from_folder(&dir)
        } else {
            Self::sd15()
        }
    }

    /// A diffusers `tokenizer/` folder: its `tokenizer.json` when it has one (as transformers
    /// prefers), else `vocab.json` + `merges.txt`.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let serialized = dir.join("tokenizer.json");
        if serialized.is_file() {
            return Self::from_tokenizer_json(&serialized);
        }
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        let vocab = read_text(&vocab_path)?;
        let merges = read_text(&merges_path)?;
        Self::from_vocab_and_merges(&vocab, &vocab_path, &merges, &merges_path)
    }

    /// A `tokenizer.json` written by the `tokenizers` library. Its own truncation and padding
    /// settings are ignored: [`encode_padded`](Self::encode_padded) does both.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut inner = Tokenizer::from_bytes(&bytes).map_err(|e| invalid(path, e))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| invalid(path, e))?;
        Self::with_special_ids(inner, path)
    }

    /// A tokenizer from the text of a `vocab.json` (token → id) and a `merges.txt` (an optional
    /// `#version` line, then one `left right` pair per line, highest priority first). The paths
    /// only name the files in errors.
    pub fn from_vocab_and_merges(
        vocab_json: &str,
        vocab_path: &Path,
        merges_txt: &str,
        merges_path: &Path,
    ) -> Result<Self> {
        let vocab: Vocab = serde_json::from_str(vocab_json).map_err(|e| {
            invalid(
                vocab_path,
                format!("expected a JSON object of token → id: {e}"),
            )
        })?;
        for special in [START_OF_TEXT, END_OF_TEXT] {
            if !vocab.contains_key(special) {
                return Err(invalid(vocab_path, format!("no entry for {special}")));
            }
        }
        let merges = parse_merges(merges_txt, merges_path)?;
        if merges.is_empty() {
            return Err(invalid(merges_path, "no merges"));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(END_OF_TEXT.to_string())
            .end_of_word_suffix("</w>".to_string())
            .continuing_subword_prefix(String::new())
            .fuse_unk(false)
            .build()
            // The only build failure left is a merge naming a token the vocabulary lacks.
            .map_err(|e| {
                invalid(
                    merges_path,
                    format!("does not fit {}: {e}", vocab_path.display()),
                )
            })?;

        let mut inner = Tokenizer::new(bpe);
        inner.with_normalizer(Some(normalizers::Sequence::new(vec![
            NFC.into(),
            Replace::new(
                normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(|e| invalid(vocab_path, e))?
            .into(),
            Lowercase.into(),
        ])));
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            Split::new(
                SplitPattern::Regex(WORD_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(|e| invalid(vocab_path, e))?
            .into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.add_special_tokens(&[
            AddedToken::from(START_OF_TEXT, true),
            AddedToken::from(END_OF_TEXT, true),
        ]);
        Self::with_special_ids(inner, vocab_path)
    }

    fn with_special_ids(inner: Tokenizer, path: &Path) -> Result<Self> {
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| invalid(path, format!("no id for {token}")))
        };
        Ok(ClipTokenizer {
            start_id: id(START_OF_TEXT)?,
            end_id: id(END_OF_TEXT)?,
            inner,
        })
    }

    /// The id of `<|startoftext|>` (49406 in SD 1.5).
    pub fn start_id(&self) -> u32 {
        self.start_id
    }

    /// The id of `<|endoftext|>`, which SD 1.x also pads with (49407).
    pub fn end_id(&self) -> u32 {
        self.end_id
    }

    /// The id of one vocabulary entry (`",</w>"` is a comma ending a word).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary entry of `id` (`"photo</w>"`: `</w>` marks the end of a word), if any.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The ids of `text` alone: no start/end tokens, no truncation.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::invalid_argument("prompt", format!("tokenizing failed: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The tokens of `text` as strings (`"photo</w>"`; an added token as itself), as
    /// transformers' `tokenizer.tokenize` gives them.
    pub fn token_strings(&self, text: &str) -> Result<Vec<String>> {
        // `encode_fast` leaves the encoding's token strings empty: look each id up.
        let ids = self.tokenize(text)?;
        Ok(ids
            .iter()
            .filter_map(|&id| self.inner.id_to_token(id))
            .collect())
    }

    /// A copy with `tokens` added as transformers' `tokenizer.add_tokens` adds them (not special,
    /// matched in the normalised text, anywhere): each gets the next id after the vocabulary.
    pub fn with_added_tokens(&self, tokens: &[String]) -> Self {
        let mut extended = self.clone();
        let added: Vec<AddedToken> = tokens
            .iter()
            .map(|t| AddedToken::from(t.clone(), false))
            .collect();
        extended.inner.add_tokens(&added);
        extended
    }

    /// The ids StableDiffusionPipeline feeds the text encoder: start token, the text's tokens
    /// truncated to `length − 2`, end token, then end tokens up to `length` (77 for SD 1.5).
    pub fn encode_padded(&self, text: &str, length: usize) -> Result<Vec<u32>> {
        if length < 2 {
            return Err(Error::invalid_argument(
                "length",
                format!("{length} leaves no room for the start and end tokens"),
            ));
        }
        let mut tokens = self.tokenize(text)?;
        tokens.truncate(length - 2);
        let mut ids = Vec::with_capacity(length);
        ids.push(self.start_id);
        ids.extend_from_slice(&tokens);
        ids.resize(length, self.end_id);
        Ok(ids)
    }

    /// The tokenizer in the `tokenizer.json` format of the `tokenizers` library.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| Error::invalid_argument("tokenizer", format!("cannot serialise: {e}")))
    }

    /// The vocabulary size including the special tokens (49408 in SD 1.5).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// `merges.txt` lines to pairs, skipping the `#version` header and blank lines.
fn parse_merges(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(left), Some(right), None) if !left.is_empty() && !right.is_empty() => {
                merges.push((left.to_string(), right.to_string()));
            }
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "line {}: expected two tokens separated by one space, found {line:?}",
                        index + 1
                    ),
                ));
            }
        }
    }
    Ok(merges)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidTokenizer {
        path: PathBuf::from(path),
        reason: reason.to_string(),
    }
}
