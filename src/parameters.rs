//! The AUTOMATIC1111 `parameters` text: what a PNG was generated with, in the form A1111, its
//! forks and image sites read back.
//!
//! ```text
//! a red fox in the snow
//! Negative prompt: blurry
//! Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 1, Version: sd-rs 0.1.0
//! ```
//!
//! The first lines are the prompt, then `Negative prompt:`, then one line of `Key: value`
//! pairs; a value holding `,`, `:` or a newline is written as a JSON string (as A1111 quotes).

use std::fmt::Write;

use sd_core::pipeline::{HiresFix, HiresTarget};
use sd_core::weights::UnetWeights;

/// What one image was generated with.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// The sampler as A1111 names it ([`crate::schedulers::infotext_names`]).
    pub sampler: String,
    /// A1111's `Schedule type` (its k-diffusion samplers only).
    pub schedule_type: Option<String>,
    pub cfg_scale: f32,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// A1111's short hash ([`crate::model_hash`]).
    pub model_hash: Option<String>,
    /// The model's file or folder name, without extension.
    pub model: Option<String>,
    pub clip_skip: usize,
    /// img2img, inpainting and the hires fix only.
    pub denoising_strength: Option<f64>,
    /// A txt2img hires fix (written as `Hires upscale` or `Hires resize`, `Hires steps` when
    /// set, `Hires upscaler`; its strength is `denoising_strength`). `width`/`height` stay the
    /// first pass's size, as A1111 writes them.
    pub hires: Option<HiresFix>,
    /// (name, A1111 short hash) of each LoRA applied ([`crate::model_hash::lora_hash`]).
    pub lora_hashes: Vec<(String, String)>,
    /// (name, A1111 short hash) of each textual-inversion embedding the prompts used
    /// ([`crate::model_hash::embedding_hash`]).
    pub ti_hashes: Vec<(String, String)>,
    /// A1111's `RNG` (`CPU`, `NV`): the random source the seeds were drawn from.
    pub rng: Option<String>,
    /// The UNet weights of a full checkpoint (one with EMA copies) the image was made with;
    /// `None` for a checkpoint with one set (written as `UNet weights: EMA` / `non-EMA`).
    pub unet_weights: Option<UnetWeights>,
    /// (file name, A1111 short hash) of a VAE given with `--vae`: A1111's `VAE hash` and `VAE`.
    pub vae: Option<(String, String)>,
    /// Whether the safety checker flagged the image (it is then black); `None` when no checker
    /// ran. Written as `Safety checker: flagged` / `passed` (A1111 has no such field).
    pub safety_flagged: Option<bool>,
}

impl Parameters {
    /// The text of the `parameters` chunk.
    pub fn to_text(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("Steps", self.steps.to_string()),
            ("Sampler", self.sampler.clone()),
        ];
        if let Some(schedule_type) = &self.schedule_type {
            fields.push(("Schedule type", schedule_type.clone()));
        }
        fields.extend([
            ("CFG scale", self.cfg_scale.to_string()),
            ("Seed", self.seed.to_string()),
            ("Size", format!("{}x{}", self.width, self.height)),
        ]);
        if let Some(hash) = &self.model_hash {
            fields.push(("Model hash", hash.clone()));
        }
        if let Some(model) = &self.model {
            fields.push(("Model", model.clone()));
        }
        if let Some((name, hash)) = &self.vae {
            fields.push(("VAE hash", hash.clone()));
            fields.push(("VAE", name.clone()));
        }
        fields.push(("Clip skip", self.clip_skip.to_string()));
        for (key, hashes) in [
            ("Lora hashes", &self.lora_hashes),
            ("TI hashes", &self.ti_hashes),
        ] {
            if !hashes.is_empty() {
                fields.push((key, hash_list(hashes)));
            }
        }
        if let Some(weights) = self.unet_weights {
            fields.push(("UNet weights", weights.to_string()));
        }
        if let Some(strength) = self.denoising_strength {
            fields.push(("Denoising strength", strength.to_string()));
        }
        if let Some(hires) = &self.hires {
            fields.extend(hires_fields(hires));
        }
        if let Some(flagged) = self.safety_flagged {
            let verdict = if flagged { "flagged" } else { "passed" };
            fields.push(("Safety checker", verdict.to_string()));
        }
        if let Some(rng) = &self.rng {
            fields.push(("RNG", rng.clone()));
        }
        fields.push(("Version", format!("sd-rs {}", env!("CARGO_PKG_VERSION"))));

        let mut text = String::new();
        let _ = writeln!(text, "{}", self.prompt);
        // A1111 leaves the line out when there is no negative prompt.
        if !self.negative_prompt.is_empty() {
            let _ = writeln!(text, "Negative prompt: {}", self.negative_prompt);
        }
        let line: Vec<String> = fields
            .into_iter()
            .map(|(key, value)| format!("{key}: {}", quote(&value)))
            .collect();
        text.push_str(&line.join(", "));
        text
    }
}

/// A1111's entries for a hires fix, in its order.
fn hires_fields(hires: &HiresFix) -> Vec<(&'static str, String)> {
    let mut fields = vec![match hires.target {
        HiresTarget::Scale(scale) => ("Hires upscale", scale.to_string()),
        HiresTarget::Resize { width, height } => ("Hires resize", format!("{width}x{height}")),
    }];
    if hires.steps != 0 {
        fields.push(("Hires steps", hires.steps.to_string()));
    }
    fields.push(("Hires upscaler", hires.upscaler.a1111_name().to_string()));
    fields
}

/// A1111's `quote`: values that would break the `Key: value, …` line become JSON strings.
pub(crate) fn quote(value: &str) -> String {
    if value.contains([',', '\n', ':']) {
        serde_json::to_string(value).unwrap_or_else(|_| value.replace([',', '\n', ':'], " "))
    } else {
        value.to_string()
    }
}

/// `name: hash, name: hash`, A1111's hash lists; as A1111 does, `:` and `,` are dropped from
/// the names so the list reads back.
fn hash_list(hashes: &[(String, String)]) -> String {
    let entries: Vec<String> = hashes
        .iter()
        .map(|(name, hash)| format!("{}: {hash}", name.replace([':', ','], "")))
        .collect();
    entries.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    fn example() -> Parameters {
        Parameters {
            prompt: "a red fox, snow".into(),
            negative_prompt: "blurry".into(),
            steps: 25,
            sampler: "Euler a".into(),
            schedule_type: None,
            cfg_scale: 7.5,
            seed: 42,
            width: 512,
            height: 768,
            model_hash: Some("6ce0161689".into()),
            model: Some("v1-5-pruned-emaonly".into()),
            clip_skip: 2,
            denoising_strength: None,
            hires: None,
            lora_hashes: Vec::new(),
            ti_hashes: Vec::new(),
            rng: None,
            unet_weights: None,
            vae: None,
            safety_flagged: None,
        }
    }

    #[test]
    fn ti_hashes_follow_the_lora_hashes_with_separators_dropped_from_names() {
        let mut parameters = example();
        parameters.lora_hashes = vec![("add_detail".into(), "7c6bad76eb54".into())];
        parameters.ti_hashes = vec![
            ("easy:negative, v2".into(), "abcdef012345".into()),
            ("style".into(), "0123456789ab".into()),
        ];
        let text = parameters.to_text();
        assert!(
            text.contains(
                r#"Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative v2: abcdef012345, style: 0123456789ab", "#
            ),
            "{text}"
        );
    }

    #[test]
    fn hires_entries_follow_the_denoising_strength_as_a1111_writes_them() {
        use sd_core::pipeline::LatentUpscaler;
        let mut parameters = example();
        parameters.denoising_strength = Some(0.55);
        parameters.hires = Some(HiresFix::scale(2.0).upscaler(LatentUpscaler::Bicubic));
        let text = parameters.to_text();
        assert!(
            text.contains(
                "Denoising strength: 0.55, Hires upscale: 2, Hires upscaler: Latent (bicubic), "
            ),
            "{text}"
        );
        parameters.hires = Some(HiresFix::resize(1024, 0).steps(12));
        let text = parameters.to_text();
        assert!(
            text.contains("Hires resize: 1024x0, Hires steps: 12, Hires upscaler: Latent, "),
            "{text}"
        );
    }

    #[test]
    fn the_unet_weight_set_of_a_full_checkpoint_is_named() {
        let mut parameters = example();
        assert!(!parameters.to_text().contains("UNet weights"));
        parameters.unet_weights = Some(UnetWeights::NonEma);
        assert!(parameters.to_text().contains(", UNet weights: non-EMA,"));
        parameters.unet_weights = Some(UnetWeights::Ema);
        assert!(parameters.to_text().contains(", UNet weights: EMA,"));
    }

    #[test]
    fn lora_hashes_are_one_quoted_field_as_a1111_writes_it() {
        let mut parameters = example();
        parameters.lora_hashes = vec![
            ("add_detail".into(), "7c6bad76eb54".into()),
            ("style".into(), "0123456789ab".into()),
        ];
        let text = parameters.to_text();
        assert!(
            text.contains(
                r#"Clip skip: 2, Lora hashes: "add_detail: 7c6bad76eb54, style: 0123456789ab", "#
            ),
            "{text}"
        );
    }

    #[test]
    fn lays_out_prompt_negative_and_fields_like_a1111() {
        let text = example().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a red fox, snow");
        assert_eq!(lines[1], "Negative prompt: blurry");
        assert!(
            lines[2].starts_with(
                "Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x768, \
             Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Version: sd-rs "
            ),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn schedule_type_and_rng_are_written_as_a1111_writes_them() {
        let mut p = example();
        p.sampler = "DPM++ 2M".into();
        p.schedule_type = Some("Karras".into());
        p.rng = Some("NV".into());
        p.negative_prompt.clear();
        let text = p.to_text();
        assert!(!text.contains("Negative prompt"), "{text}");
        assert!(
            text.contains("Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, "),
            "{text}"
        );
        assert!(text.contains(", RNG: NV, Version: "), "{text}");
    }

    #[test]
    fn a_vae_override_is_named_and_hashed_after_the_model_as_a1111() {
        let mut parameters = example();
        parameters.vae = Some((
            "vae-ft-mse-840000-ema-pruned.safetensors".into(),
            "735e4c3a44".into(),
        ));
        assert!(parameters.to_text().contains(
            "Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, \
             VAE: vae-ft-mse-840000-ema-pruned.safetensors, Clip skip: 2"
        ));
    }

    #[test]
    fn a_safety_checker_verdict_is_a_field_only_when_one_ran() {
        let mut parameters = example();
        assert!(!parameters.to_text().contains("Safety checker"));
        parameters.safety_flagged = Some(true);
        assert!(parameters.to_text().contains("Safety checker: flagged, "));
        parameters.safety_flagged = Some(false);
        assert!(parameters.to_text().contains("Safety checker: passed, "));
    }

    #[test]
    fn values_with_separators_are_quoted() {
        let mut p = example();
        p.model = Some("my, model: v2".into());
        p.denoising_strength = Some(0.6);
        let text = p.to_text();
        assert!(text.contains(r#"Model: "my, model: v2""#), "{text}");
        assert!(text.contains("Denoising strength: 0.6"), "{text}");
    }
}
