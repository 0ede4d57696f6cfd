//! Reading a model's JSON configs (`config.json`, `scheduler_config.json`, `model_index.json`)
//! into their serde structs, with errors that name the file and the field (through
//! `serde_path_to_error`). Every crate's config reading goes through here.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// More resolution levels than any SD-family UNet or VAE has (each halves the latents); bounds
/// the side multiple `2^(levels − 1)` their configs imply.
pub const MAX_LEVELS: usize = 16;

/// The largest width a config may give (channels, embedding sizes, vocabulary, positions):
/// 16× SD-family values, and small enough that products of a few of them cannot overflow or
/// ask the allocator for terabytes before a weight is read.
pub const MAX_WIDTH: usize = 1 << 20;

/// The most repeats a config may give (layers per block, transformer layers, hidden layers):
/// each repeat builds modules, so an absurd count must fail before the building starts.
pub const MAX_REPEATS: usize = 256;

/// Each `(field, value, max)` is a count in `1..=max` (see [`MAX_WIDTH`], [`MAX_REPEATS`]).
/// Every config's sizes are checked here before any model is built from them.
pub fn check_counts(origin: &Path, fields: &[(&str, usize, usize)]) -> Result<()> {
    for &(field, value, max) in fields {
        if value == 0 {
            return Err(config_error(origin, field, "must be positive"));
        }
        if value > max {
            return Err(config_error(
                origin,
                field,
                format!("{value} is larger than the {max} this crate accepts"),
            ));
        }
    }
    Ok(())
}

/// `value` is a finite number > 0 (an epsilon, a scale): zero, negative, NaN and infinite values
/// make every output NaN, which would reach the user as a black image.
pub fn check_positive(origin: &Path, field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(config_error(
            origin,
            field,
            format!("{value} is not a positive finite number"),
        ))
    }
}

/// `value` is a finite number (a shift, a factor).
pub fn check_finite(origin: &Path, field: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(config_error(
            origin,
            field,
            format!("{value} is not a finite number"),
        ))
    }
}

/// Read and parse the JSON config at `path` (see [`parse_config`]).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    parse_config(&read_config_text(path)?, path)
}

/// The text of the config file at `path` (an I/O error names the file).
pub fn read_config_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse config JSON; `origin` names it in errors. A missing field, a value of the wrong type
/// or an unknown enum name (a block type) is an [`Error::Config`] naming the field's path
/// (`down_block_types[1]`).
pub fn parse_config<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T> {
    let mut json = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut json).map_err(|e| path_error(e, origin))
}

/// [`parse_config`] for JSON already parsed (and perhaps edited) as a [`serde_json::Value`].
pub fn config_from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    origin: &Path,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error(e, origin))
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>, origin: &Path) -> Error {
    let path = e.path().to_string();
    let reason = e.into_inner().to_string();
    let field = if path != "." {
        path
    } else if let Some(name) = missing_field_name(&reason) {
        name.to_string()
    } else {
        "(file)".to_string()
    };
    config_error(origin, field, reason)
}

/// `2^(levels − 1)`: each resolution level of a UNet or VAE but the last halves the sides, so
/// sides must be multiples of this (levels clamped to 1..=[`MAX_LEVELS`]).
pub fn level_scale(levels: usize) -> usize {
    1 << levels.clamp(1, MAX_LEVELS).saturating_sub(1)
}

/// `block_out_channels` gives 1 to [`MAX_LEVELS`] levels, and each per-level list
/// (`(field, length)`, such as `down_block_types`) has one entry per level.
pub fn check_levels(origin: &Path, levels: usize, per_level: &[(&str, usize)]) -> Result<()> {
    if levels == 0 || levels > MAX_LEVELS {
        return Err(config_error(
            origin,
            "block_out_channels",
            format!("has {levels} levels; expected 1 to {MAX_LEVELS}"),
        ));
    }
    for &(field, len) in per_level {
        if len != levels {
            return Err(config_error(
                origin,
                field,
                format!("has {len} entries but block_out_channels has {levels}"),
            ));
        }
    }
    Ok(())
}

/// An [`Error::Config`] about `field` of the config file at `origin`.
pub fn config_error(origin: &Path, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        path: origin.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// serde reports a missing field at its parent's path; the name is only in the message
/// ("missing field `block_out_channels` at line 1 column 2").
fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}
