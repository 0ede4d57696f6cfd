//! Reading A1111's `parameters` text back (its `parse_generation_parameters` rules) and printing
//! it again in A1111's exact form (`create_infotext`), so a PNG's parameters survive a round
//! trip field for field, including fields sd-rs does not use (`TI hashes`, `Hires upscale`, …).
//!
//! The layout: prompt lines; then, if there is a negative prompt, lines starting at
//! `Negative prompt: `; then one line of `Key: value` pairs joined by `, `. A value holding `,`,
//! `:` or a newline is a JSON string (`Lora hashes: "a: 1234, b: 5678"`). A last line with fewer
//! than three pairs is not a parameter line but part of the prompt, as A1111 reads it.

use crate::parameters::quote;

/// A1111 treats a last line as parameters only when it holds at least this many pairs.
const MIN_PARAMETER_PAIRS: usize = 3;

/// The parts of an A1111 `parameters` text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Infotext {
    pub prompt: String,
    pub negative_prompt: String,
    /// `Key: value` pairs in their order, values unquoted.
    pub fields: Vec<(String, String)>,
}

impl Infotext {
    /// Read `text` as A1111 does.
    pub fn parse(text: &str) -> Infotext {
        let text = text.trim();
        let mut lines: Vec<&str> = text.split('\n').collect();
        let last = lines.pop().unwrap_or_default();
        let fields = parse_fields(last);
        let fields = if fields.len() >= MIN_PARAMETER_PAIRS {
            fields
        } else {
            lines.push(last);
            Vec::new()
        };
        let mut prompt: Vec<&str> = Vec::new();
        let mut negative: Vec<&str> = Vec::new();
        let mut in_negative = false;
        for line in lines {
            let mut line = line.trim();
            if let Some(rest) = line.strip_prefix("Negative prompt:") {
                in_negative = true;
                line = rest.trim();
            }
            if in_negative {
                negative.push(line);
            } else {
                prompt.push(line);
            }
        }
        Infotext {
            prompt: prompt.join("\n"),
            negative_prompt: negative.join("\n"),
            fields,
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The text A1111 writes for these parts.
    pub fn to_text(&self) -> String {
        let line = self
            .fields
            .iter()
            .map(|(key, value)| {
                if key == value {
                    key.clone()
                } else {
                    format!("{key}: {}", quote(value))
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let negative = if self.negative_prompt.is_empty() {
            String::new()
        } else {
            format!("\nNegative prompt: {}", self.negative_prompt)
        };
        format!("{}{negative}\n{line}", self.prompt)
            .trim()
            .to_string()
    }
}

/// The `Key: value` pairs of a parameter line: split at commas outside quotes; a quoted value
/// is a JSON string.
fn parse_fields(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for piece in split_outside_quotes(line) {
        let Some((key, value)) = piece.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let valid_key = key.chars().next().is_some_and(char::is_alphanumeric)
            && key
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '-' | '/'));
        if !valid_key {
            continue;
        }
        let value = value.trim_start();
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_string())
        } else {
            value.to_string()
        };
        fields.push((key.to_string(), value));
    }
    fields
}

/// `line` split at commas that are not inside a double-quoted string (with `\"` escapes).
fn split_outside_quotes(line: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                pieces.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&line[start..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameter texts in the form A1111 1.10's `create_infotext` writes them.
    const A1111_TEXTS: &[&str] = &[
        "a red fox, (snow:1.2)\nNegative prompt: blurry, lowres\nSteps: 20, Sampler: DPM++ 2M, \
         Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, \
         Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Clip skip: 2, Hires upscale: 2, \
         Hires steps: 10, Hires upscaler: Latent, Lora hashes: \"add_detail: 7c6bad76eb54, \
         style: 0123456789ab\", TI hashes: \"easynegative: c74b4e810b03\", RNG: NV, Version: v1.10.1",
        "a lighthouse\nSteps: 25, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: \
         1, Size: 512x512, Model: \"my, model: v2\", Version: v1.10.1",
        "two lines\nof prompt\nNegative prompt: first\nsecond\nSteps: 5, Sampler: DDIM, CFG scale: \
         7, Seed: 9, Size: 64x64, Template: \"a \\\"quoted\\\" value, with a comma\"",
    ];

    #[test]
    fn a1111_texts_print_back_identically() {
        for text in A1111_TEXTS {
            let parsed = Infotext::parse(text);
            assert_eq!(&parsed.to_text(), text);
        }
    }

    #[test]
    fn fields_read_as_a1111_reads_them() {
        let parsed = Infotext::parse(A1111_TEXTS[0]);
        assert_eq!(parsed.prompt, "a red fox, (snow:1.2)");
        assert_eq!(parsed.negative_prompt, "blurry, lowres");
        assert_eq!(parsed.get("Schedule type"), Some("Karras"));
        assert_eq!(
            parsed.get("Lora hashes"),
            Some("add_detail: 7c6bad76eb54, style: 0123456789ab")
        );
        assert_eq!(parsed.get("TI hashes"), Some("easynegative: c74b4e810b03"));
        assert_eq!(parsed.get("Hires upscale"), Some("2"));
        assert_eq!(parsed.get("RNG"), Some("NV"));
        let parsed = Infotext::parse(A1111_TEXTS[2]);
        assert_eq!(parsed.prompt, "two lines\nof prompt");
        assert_eq!(parsed.negative_prompt, "first\nsecond");
        assert_eq!(
            parsed.get("Template"),
            Some("a \"quoted\" value, with a comma")
        );
    }

    #[test]
    fn a_short_last_line_is_prompt_not_parameters() {
        let parsed = Infotext::parse("just a prompt\nwith: colons, in it");
        assert!(parsed.fields.is_empty());
        assert_eq!(parsed.prompt, "just a prompt\nwith: colons, in it");
    }

    /// What sd-rs writes reads back into the same fields.
    #[test]
    fn sd_rs_parameters_read_back() {
        let parameters = crate::parameters::Parameters {
            prompt: "a fox".into(),
            negative_prompt: String::new(),
            steps: 20,
            sampler: "DPM++ 2M".into(),
            schedule_type: Some("Karras".into()),
            cfg_scale: 7.5,
            seed: 42,
            width: 512,
            height: 512,
            model_hash: None,
            model: Some("a, b".into()),
            clip_skip: 1,
            denoising_strength: None,
            hires: None,
            lora_hashes: vec![("x".into(), "1234".into()), ("y".into(), "5678".into())],
            ti_hashes: vec![("emb".into(), "abcd".into())],
            rng: Some("NV".into()),
            unet_weights: None,
            vae: None,
            safety_flagged: None,
        };
        let text = parameters.to_text();
        let parsed = Infotext::parse(&text);
        assert_eq!(parsed.to_text(), text);
        assert_eq!(parsed.get("Model"), Some("a, b"));
        assert_eq!(parsed.get("Lora hashes"), Some("x: 1234, y: 5678"));
        assert_eq!(parsed.negative_prompt, "");
    }
}
