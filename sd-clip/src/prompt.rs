//! The AUTOMATIC1111 emphasis grammar: `(word)`, `[word]`, `(word:1.3)`, escapes and `BREAK`.
//!
//! [`parse_prompt`] turns a prompt into text pieces with weights, following A1111's
//! `parse_prompt_attention` step by step so that odd inputs (unbalanced brackets, stray colons,
//! `BREAK` inside brackets) come out the same. The grammar, as a user sees it:
//!
//! | written | meaning |
//! |---|---|
//! | `(text)` | weight × 1.1; nests: `((text))` × 1.21 |
//! | `[text]` | weight ÷ 1.1; nests |
//! | `(text:1.3)` | weight × 1.3 (any `[+-]?[0-9.]+`, spaces allowed around it) |
//! | `\(` `\)` `\[` `\]` `\\` | the character itself, no emphasis |
//! | `BREAK` (upper case, a word of its own, outside brackets) | start a new 75-token chunk |
//!
//! Details that follow A1111 exactly:
//! - An unclosed `(` or `[` applies its ×1.1 or ÷1.1 to everything after it.
//! - A `)`, `]` or `:1.3)` with nothing open to close is ordinary text.
//! - A backslash before any other character is dropped (`\n` written as two characters reads `n`).
//! - Whitespace around `BREAK` is removed. Inside brackets `BREAK` loses its meaning and becomes
//!   the word "BREAK" with a weight of −1 × the bracket's factor (an A1111 quirk kept on purpose).
//! - Neighbouring pieces of equal weight are merged.
//!
//! One difference: A1111 (Python) also accepts non-ASCII decimal digits (`١.٥`) in a weight;
//! here only ASCII digits make a weight, and such text stays ordinary text.
//! A1111's prompt editing (`[from:to:when]`) and alternation (`[a|b]`) change the prompt per
//! sampling step; they are not part of this grammar (the brackets and colons read as above).

use sd_core::{Error, Result};

/// What `(text)` multiplies a weight by.
const ROUND_BRACKET_FACTOR: f64 = 1.1;
/// What `[text]` multiplies a weight by.
const SQUARE_BRACKET_FACTOR: f64 = 1.0 / 1.1;
/// The weight A1111 marks a `BREAK` with in its piece list.
const BREAK_MARK: f64 = -1.0;

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptPiece {
    /// Text whose tokens get `weight` (1.0 is neutral). May be empty.
    Text { text: String, weight: f64 },
    /// End the current chunk here.
    Break,
}

/// Parse A1111 emphasis syntax. Errors: a weight that is not a number (`(a:1.2.3)`), which A1111
/// also rejects, and a weight past ±[`MAX_PROMPT_WEIGHT`] (`(a:1e40)`), which A1111 turns into a
/// black image.
pub fn parse_prompt(prompt: &str) -> Result<Vec<PromptPiece>> {
    let mut parser = Parser::default();
    let mut rest = prompt;
    while let Some(c) = rest.chars().next() {
        let consumed = match c {
            '\\' => parser.escape(rest),
            '(' => {
                parser.round_open.push(parser.pieces.len());
                1
            }
            '[' => {
                parser.square_open.push(parser.pieces.len());
                1
            }
            ')' => {
                match parser.round_open.pop() {
                    Some(start) => parser.multiply_from(start, ROUND_BRACKET_FACTOR),
                    None => parser.push_text(")"),
                }
                1
            }
            ']' => {
                match parser.square_open.pop() {
                    Some(start) => parser.multiply_from(start, SQUARE_BRACKET_FACTOR),
                    None => parser.push_text("]"),
                }
                1
            }
            ':' => parser.colon(prompt, rest)?,
            _ => {
                let end = rest.find(is_syntax_char).unwrap_or(rest.len());
                parser.push_text(&rest[..end]);
                end
            }
        };
        rest = &rest[consumed..];
    }
    let pieces = parser.finish();
    check_weights(&pieces)?;
    Ok(pieces)
}

/// The largest emphasis weight accepted. A1111 sets no limit, but weights scale the text
/// embeddings, and past this the encoder's outputs overflow f32 (an all-black image).
pub const MAX_PROMPT_WEIGHT: f64 = 1000.0;

/// Every weight, as given or as brackets multiplied it, is finite and within
/// ±[`MAX_PROMPT_WEIGHT`].
fn check_weights(pieces: &[PromptPiece]) -> Result<()> {
    for piece in pieces {
        if let PromptPiece::Text { text, weight } = piece
            && !(weight.is_finite() && weight.abs() <= MAX_PROMPT_WEIGHT)
        {
            return Err(Error::invalid_argument(
                "prompt",
                format!(
                    "`{text}` has weight {weight}; weights must be within ±{MAX_PROMPT_WEIGHT}"
                ),
            ));
        }
    }
    Ok(())
}

fn is_syntax_char(c: char) -> bool {
    matches!(c, '\\' | '(' | ')' | '[' | ']' | ':')
}

/// Python's `\s` (`str.isspace`): Rust's whitespace plus the four ASCII separators U+001C–U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` for str patterns.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A1111's working state: pieces as (text, weight) and the positions where open brackets began.
#[derive(Default)]
struct Parser {
    pieces: Vec<(String, f64)>,
    round_open: Vec<usize>,
    square_open: Vec<usize>,
}

impl Parser {
    fn multiply_from(&mut self, start: usize, factor: f64) {
        for piece in &mut self.pieces[start..] {
            piece.1 *= factor;
        }
    }

    /// `rest` starts with a backslash: an escaped bracket or backslash is literal text; a lone
    /// backslash is dropped. Returns the bytes consumed.
    fn escape(&mut self, rest: &str) -> usize {
        match rest[1..].chars().next() {
            Some(c @ ('(' | ')' | '[' | ']' | '\\')) => {
                self.pieces.push((c.to_string(), 1.0));
                2
            }
            _ => {
                self.pieces.push((String::new(), 1.0));
                1
            }
        }
    }

    /// `rest` starts with a colon: `:<number>)` closes a round bracket with that weight;
    /// otherwise the colon (or the whole `:<number>)` when no bracket is open) is text.
    fn colon(&mut self, prompt: &str, rest: &str) -> Result<usize> {
        let Some((number, len)) = weight_suffix(rest) else {
            self.push_text(":");
            return Ok(1);
        };
        match self.round_open.pop() {
            Some(start) => {
                let weight: f64 = number.parse().map_err(|_| {
                    let at = prompt.len() - rest.len();
                    Error::invalid_argument(
                        "prompt",
                        format!(
                            "`{}` at byte {at}: `{number}` is not a number",
                            &rest[..len]
                        ),
                    )
                })?;
                self.multiply_from(start, weight);
            }
            None => self.push_text(&rest[..len]),
        }
        Ok(len)
    }

    /// Ordinary text, split at `BREAK`s.
    fn push_text(&mut self, text: &str) {
        let mut from = 0;
        for (start, end) in break_spans(text) {
            self.pieces.push((text[from..start].to_string(), 1.0));
            self.pieces.push(("BREAK".to_string(), BREAK_MARK));
            from = end;
        }
        self.pieces.push((text[from..].to_string(), 1.0));
    }

    fn finish(mut self) -> Vec<PromptPiece> {
        // Brackets never closed apply to the end of the prompt.
        for start in std::mem::take(&mut self.round_open) {
            self.multiply_from(start, ROUND_BRACKET_FACTOR);
        }
        for start in std::mem::take(&mut self.square_open) {
            self.multiply_from(start, SQUARE_BRACKET_FACTOR);
        }
        let mut merged: Vec<(String, f64)> = Vec::with_capacity(self.pieces.len());
        for (text, weight) in self.pieces {
            match merged.last_mut() {
                Some(last) if last.1 == weight => last.0.push_str(&text),
                _ => merged.push((text, weight)),
            }
        }
        if merged.is_empty() {
            merged.push((String::new(), 1.0));
        }
        merged
            .into_iter()
            .map(|(text, weight)| {
                if text == "BREAK" && weight == BREAK_MARK {
                    PromptPiece::Break
                } else {
                    PromptPiece::Text { text, weight }
                }
            })
            .collect()
    }
}

/// A1111's weight pattern at the start of `rest`: `:\s*([+-]?[.\d]+)\s*\)`. Returns the number's
/// text and the length of the whole match.
fn weight_suffix(rest: &str) -> Option<(&str, usize)> {
    let after_colon = &rest[1..];
    let number_start = after_colon.len() - after_colon.trim_start_matches(is_python_space).len();
    let number_text = &after_colon[number_start..];
    let sign_len = usize::from(number_text.starts_with(['+', '-']));
    let digits_len = number_text[sign_len..]
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .unwrap_or(number_text.len() - sign_len);
    if digits_len == 0 {
        return None;
    }
    let number = &number_text[..sign_len + digits_len];
    let tail = &number_text[number.len()..];
    let tail_trimmed = tail.trim_start_matches(is_python_space);
    if !tail_trimmed.starts_with(')') {
        return None;
    }
    let len = rest.len() - tail_trimmed.len() + 1;
    Some((number, len))
}

/// Byte spans of A1111's `\s*\bBREAK\b\s*` in `text`, left to right, without overlap.
fn break_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut search_from = 0;
    while let Some(found) = text[search_from..].find("BREAK") {
        let start = search_from + found;
        let end = start + "BREAK".len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if before.is_some_and(is_word_char) || after.is_some_and(is_word_char) {
            search_from = start + 1;
            continue;
        }
        // The whitespace on both sides belongs to the match, but not what an earlier match took.
        let left = text[search_from..start]
            .trim_end_matches(is_python_space)
            .len()
            + search_from;
        let right = text.len() - text[end..].trim_start_matches(is_python_space).len();
        spans.push((left, right));
        search_from = right;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str, weight: f64) -> PromptPiece {
        PromptPiece::Text {
            text: text.to_string(),
            weight,
        }
    }

    fn parse(prompt: &str) -> Vec<PromptPiece> {
        parse_prompt(prompt).unwrap_or_else(|e| panic!("{prompt:?}: {e}"))
    }

    #[test]
    fn plain_text_is_one_piece_of_weight_one() {
        assert_eq!(
            parse("a photo of a cat"),
            vec![text("a photo of a cat", 1.0)]
        );
        assert_eq!(parse(""), vec![text("", 1.0)]);
    }

    #[test]
    fn a1111_docstring_example_gives_its_weights_bit_for_bit() {
        // The example in the docstring of A1111's `parse_prompt_attention`, with its outputs.
        assert_eq!(
            parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            vec![
                text("a ", 1.0),
                text("house", 1.5730000000000004),
                text(" ", 1.1),
                text("on", 1.0),
                text(" a ", 1.1),
                text("hill", 0.55),
                text(", sun, ", 1.1),
                text("sky", 1.4641000000000006),
                text(".", 1.1),
            ]
        );
        assert_eq!(parse("(unbalanced"), vec![text("unbalanced", 1.1)]);
        assert_eq!(parse(r"\(literal\]"), vec![text("(literal]", 1.0)]);
        assert_eq!(
            parse("(unnecessary)(parens)"),
            vec![text("unnecessaryparens", 1.1)]
        );
    }

    #[test]
    fn round_brackets_multiply_by_1_1_and_nest() {
        assert_eq!(
            parse("a (cat) on ((grass))"),
            vec![
                text("a ", 1.0),
                text("cat", 1.1),
                text(" on ", 1.0),
                text("grass", 1.1 * 1.1),
            ]
        );
    }

    #[test]
    fn square_brackets_divide_by_1_1() {
        assert_eq!(
            parse("[blurry] [[ugly]]"),
            vec![
                text("blurry", 1.0 / 1.1),
                text(" ", 1.0),
                text("ugly", (1.0 / 1.1) * (1.0 / 1.1)),
            ]
        );
    }

    #[test]
    fn explicit_weight_replaces_the_round_bracket_factor() {
        assert_eq!(
            parse("(cat:1.3) dog"),
            vec![text("cat", 1.3), text(" dog", 1.0)]
        );
        assert_eq!(parse("(cat: 0.5 )"), vec![text("cat", 0.5)]);
        assert_eq!(parse("(cat:-1)"), vec![text("cat", -1.0)]);
        assert_eq!(parse("(cat:.5)"), vec![text("cat", 0.5)]);
        // Weights multiply through nesting.
        assert_eq!(parse("((cat:1.5))"), vec![text("cat", 1.5 * 1.1)]);
    }

    #[test]
    fn weight_one_is_the_same_as_no_syntax() {
        assert_eq!(parse("(cat:1.0)"), parse("cat"));
        assert_eq!(parse("a (b:1) c"), parse("a b c"));
    }

    #[test]
    fn escaped_brackets_are_literal_text() {
        assert_eq!(
            parse(r"\(cat\) \[dog\] a\\b"),
            vec![text(r"(cat) [dog] a\b", 1.0)]
        );
        assert_eq!(parse(r"(\(x\))"), vec![text("(x)", 1.1)]);
    }

    #[test]
    fn lone_backslash_is_dropped() {
        assert_eq!(parse(r"a\nb"), vec![text("anb", 1.0)]);
    }

    #[test]
    fn unclosed_brackets_run_to_the_end() {
        assert_eq!(
            parse("a (b [c"),
            vec![text("a ", 1.0), text("b ", 1.1), text("c", 1.1 / 1.1)]
        );
    }

    #[test]
    fn closers_without_openers_and_stray_colons_are_text() {
        assert_eq!(parse("a) b] c:d"), vec![text("a) b] c:d", 1.0)]);
        assert_eq!(parse("x :1.5) y"), vec![text("x :1.5) y", 1.0)]);
        assert_eq!(parse("(a:b)"), vec![text("a:b", 1.1)]);
    }

    #[test]
    fn break_splits_and_eats_surrounding_space() {
        assert_eq!(
            parse("a cat  BREAK\ta dog"),
            vec![text("a cat", 1.0), PromptPiece::Break, text("a dog", 1.0)]
        );
        assert_eq!(
            parse("BREAK BREAK x"),
            vec![
                text("", 1.0),
                PromptPiece::Break,
                text("", 1.0),
                PromptPiece::Break,
                text("x", 1.0)
            ]
        );
    }

    #[test]
    fn break_must_be_a_whole_upper_case_word() {
        for prompt in ["BREAKFAST", "aBREAK", "BREAK_x", "break", "Break it"] {
            assert_eq!(parse(prompt), vec![text(prompt, 1.0)], "{prompt}");
        }
        // Punctuation is a word boundary.
        assert_eq!(
            parse("a,BREAK,b"),
            vec![text("a,", 1.0), PromptPiece::Break, text(",b", 1.0)]
        );
    }

    #[test]
    fn break_inside_brackets_is_weighted_text_as_in_a1111() {
        assert_eq!(
            parse("(x BREAK y)"),
            vec![text("x", 1.1), text("BREAK", -1.1), text("y", 1.1)]
        );
    }

    #[test]
    fn equal_neighbouring_weights_merge() {
        assert_eq!(parse("(a)(b) c"), vec![text("ab", 1.1), text(" c", 1.0)]);
    }

    #[test]
    fn bad_weight_is_an_invalid_argument() {
        for prompt in ["(a:1.2.3)", "(a:.)", "(a:..5)"] {
            match parse_prompt(prompt) {
                Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "prompt"),
                other => panic!("{prompt}: expected InvalidArgument, got {other:?}"),
            }
        }
    }

    #[test]
    fn unicode_text_survives() {
        assert_eq!(
            parse("(猫:1.2) café 🐱"),
            vec![text("猫", 1.2), text(" café 🐱", 1.0)]
        );
    }
}
