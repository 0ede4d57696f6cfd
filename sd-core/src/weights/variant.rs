//! Which SD 1.x variant a checkpoint is, and refusing the models that only look like one.
//!
//! SD 2.x and SDXL checkpoints share most key names with SD 1.x, so loading one "works" until
//! the shapes stop fitting deep inside the model. We look at the few tensors that tell them apart
//! and refuse at open time, naming the file and the evidence.

use std::path::Path;

use serde_json::Value;

use super::store::Weights;
use crate::error::{Error, Result};

/// The SD 1.x variants the pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// txt2img / img2img: the UNet sees the 4 latent channels.
    Standard,
    /// Inpainting: latents + mask + masked-image latents, 9 channels.
    Inpainting,
}

impl Variant {
    /// Input channels of the UNet's `conv_in`.
    pub fn unet_in_channels(self) -> usize {
        match self {
            Variant::Standard => 4,
            Variant::Inpainting => 9,
        }
    }
}

/// Key prefixes in a single file that only other model families have.
const FOREIGN_KEY_PREFIXES: [(&str, &str); 3] = [
    (
        "conditioner.embedders.",
        "SDXL: it has conditioner.embedders.* text encoders",
    ),
    (
        "model.diffusion_model.label_emb.",
        "SDXL: its UNet has label_emb (size/crop conditioning)",
    ),
    (
        "cond_stage_model.model.",
        "SD 2.x: its text encoder is OpenCLIP (cond_stage_model.model.*)",
    ),
];

/// Cross-attention widths of the model families that share SD 1.x's UNet naming.
const FOREIGN_CONTEXT_WIDTHS: [(usize, &str); 2] = [
    (1024, "SD 2.x: cross-attention width 1024 (OpenCLIP ViT-H)"),
    (2048, "SDXL: cross-attention width 2048"),
];

/// UNet modules only other model families have.
const FOREIGN_UNET_MODULES: [(&str, &str); 2] = [
    (
        "add_embedding.",
        "SDXL: its UNet has add_embedding (size/crop conditioning)",
    ),
    (
        "class_embedding.",
        "its UNet is class-conditioned (e.g. the SD x4 upscaler)",
    ),
];

fn unsupported(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnsupportedModel {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Refuse a single file holding an SD 2.x or SDXL text encoder or UNet.
pub(crate) fn reject_foreign_keys<'k>(
    path: &Path,
    keys: impl IntoIterator<Item = &'k str>,
) -> Result<()> {
    for key in keys {
        if let Some((_, reason)) = FOREIGN_KEY_PREFIXES
            .iter()
            .find(|(p, _)| key.starts_with(p))
        {
            return Err(unsupported(path, *reason));
        }
    }
    Ok(())
}

/// Refuse a diffusers folder whose `model_index.json` describes an SDXL pipeline.
pub(crate) fn reject_foreign_pipeline(model_index_path: &Path, model_index: &Value) -> Result<()> {
    if model_index.get("text_encoder_2").is_some() {
        return Err(unsupported(
            model_index_path,
            "SDXL: the pipeline has a second text encoder (text_encoder_2)",
        ));
    }
    if let Some(class) = model_index.get("_class_name").and_then(Value::as_str)
        && class.contains("XL")
    {
        return Err(unsupported(
            model_index_path,
            format!("SDXL: the pipeline class is {class}"),
        ));
    }
    Ok(())
}

/// Tell standard from inpainting by `conv_in`'s input channels, refusing UNets of other
/// families (`path` is what errors name: the single file or the folder). `None` when there is
/// no `conv_in` (a partial set of weights): asking for it will name what is missing.
pub(crate) fn detect(path: &Path, unet: &Weights<'_>) -> Result<Option<Variant>> {
    let names = unet.names();
    for name in &names {
        if let Some((_, reason)) = FOREIGN_UNET_MODULES
            .iter()
            .find(|(p, _)| name.starts_with(p))
        {
            return Err(unsupported(path, *reason));
        }
        if name.ends_with(".attn2.to_k.weight")
            && let Some(&width) = unet.info(name)?.shape.get(1)
            && let Some((_, reason)) = FOREIGN_CONTEXT_WIDTHS.iter().find(|(w, _)| *w == width)
        {
            return Err(unsupported(path, *reason));
        }
    }
    let conv_in = "conv_in.weight";
    if !unet.contains(conv_in) {
        return Ok(None);
    }
    match unet.info(conv_in)?.shape.get(1) {
        Some(4) => Ok(Some(Variant::Standard)),
        Some(9) => Ok(Some(Variant::Inpainting)),
        found => Err(unsupported(
            path,
            format!(
                "its UNet conv_in takes {} input channels; SD 1.x has 4, or 9 for inpainting",
                found.map_or_else(|| "no".to_string(), usize::to_string)
            ),
        )),
    }
}
