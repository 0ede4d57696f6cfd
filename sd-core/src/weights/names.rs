//! The components of a pipeline and the one spelling of each weight name model code uses.
//!
//! Files spell some names two ways: transformers 5 saves `CLIPTextModel` without the
//! `text_model.` prefix that published SD folders have, and diffusers folders saved before
//! diffusers 0.14 name the VAE attention `query/key/value/proj_attn` instead of
//! `to_q/to_k/to_v/to_out.0`. Both file keys and requests pass through [`canonical`], so model
//! code may ask in either spelling and find the tensor whichever the file used.

use std::borrow::Cow;
use std::fmt;

/// A model of the pipeline, as named by the diffusers folder layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    TextEncoder,
    Unet,
    Vae,
    /// diffusers' `StableDiffusionSafetyChecker` (a CLIP vision tower and concept embeddings).
    /// Optional in a pipeline, so not in [`Component::ALL`]: it is opened on its own.
    SafetyChecker,
}

impl Component {
    /// All components an SD 1.x pipeline loads weights for.
    pub const ALL: [Component; 3] = [Component::TextEncoder, Component::Unet, Component::Vae];

    /// The component's folder (and `model_index.json` key) in a diffusers pipeline.
    pub fn folder_name(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::SafetyChecker => "safety_checker",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder_name())
    }
}

/// Prefix of every CLIP text-transformer weight in SD's own folders.
const TEXT_MODEL_PREFIX: &str = "text_model.";

/// The old diffusers VAE attention parameter names and their current ones.
const LEGACY_VAE_ATTENTION: [(&str, &str); 4] = [
    ("query", "to_q"),
    ("key", "to_k"),
    ("value", "to_v"),
    ("proj_attn", "to_out.0"),
];

/// The spelling of `name` that a component's name table is keyed by.
pub fn canonical(component: Component, name: &str) -> Cow<'_, str> {
    match component {
        Component::TextEncoder if !name.starts_with(TEXT_MODEL_PREFIX) => {
            Cow::Owned(format!("{TEXT_MODEL_PREFIX}{name}"))
        }
        Component::Vae => modern_vae_attention(name),
        _ => Cow::Borrowed(name),
    }
}

/// `….attentions.N.query.weight` → `….attentions.N.to_q.weight`, other names unchanged.
fn modern_vae_attention(name: &str) -> Cow<'_, str> {
    let segments: Vec<&str> = name.split('.').collect();
    let Some(at) = segments.iter().position(|s| *s == "attentions") else {
        return Cow::Borrowed(name);
    };
    let renamed = segments.get(at + 2).and_then(|module| {
        LEGACY_VAE_ATTENTION
            .iter()
            .find(|(old, _)| old == module)
            .map(|(_, new)| *new)
    });
    match renamed {
        Some(new) => {
            let mut out = segments.clone();
            out[at + 2] = new;
            Cow::Owned(out.join("."))
        }
        None => Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_encoder_names_gain_the_text_model_prefix_once() {
        let bare = "embeddings.token_embedding.weight";
        let full = "text_model.embeddings.token_embedding.weight";
        assert_eq!(canonical(Component::TextEncoder, bare), full);
        assert_eq!(canonical(Component::TextEncoder, full), full);
    }

    #[test]
    fn legacy_vae_attention_names_are_modernised() {
        assert_eq!(
            canonical(
                Component::Vae,
                "decoder.mid_block.attentions.0.proj_attn.bias"
            ),
            "decoder.mid_block.attentions.0.to_out.0.bias"
        );
        assert_eq!(
            canonical(
                Component::Vae,
                "encoder.mid_block.attentions.0.query.weight"
            ),
            "encoder.mid_block.attentions.0.to_q.weight"
        );
        let modern = "encoder.mid_block.attentions.0.group_norm.weight";
        assert_eq!(canonical(Component::Vae, modern), modern);
        // Only the VAE has the legacy spelling.
        let unet = "mid_block.attentions.0.key.weight";
        assert_eq!(canonical(Component::Unet, unet), unet);
    }
}
