//! diffusers' `StableDiffusionSafetyChecker`, the filter SD 1.5's model card asks for.
//!
//! Each image is preprocessed as CLIP expects ([`ClipImageProcessor`]), embedded by the CLIP
//! vision tower ([`ClipVisionTransformer`]) and `visual_projection`, and compared by cosine
//! with 3 "special care" and 17 concept embeddings, each with its own threshold. The rules are
//! diffusers' loop, float for float:
//!
//! ```text
//! adjustment = 0
//! for each special concept c:  score = round(cos − threshold_c + adjustment, 3)   (f32)
//!                              if score > 0: adjustment = 0.01   (for the concepts after it too)
//! for each concept c:          score = round(cos − threshold_c + adjustment, 3)
//! flagged = any concept score > 0
//! ```
//!
//! A flagged image is replaced by black, as diffusers' pipeline returns it.

use std::path::{Path, PathBuf};

use ndarray::Axis;
use sd_core::nn::Linear;
use sd_core::pipeline::RgbImage;
use sd_core::weights::diffusers::component_files;
use sd_core::weights::{Component, WeightStore, Weights};
use sd_core::{Backend, Error, HostTensor, Result};

use crate::image_processor::ClipImageProcessor;
use crate::vision::{ClipConfigFile, ClipVisionConfig, ClipVisionTransformer};

/// diffusers' fixed counts of concept embeddings.
const CONCEPTS: usize = 17;
const SPECIAL_CARE: usize = 3;
/// What one special-care match adds to every later score of the image.
const SPECIAL_CARE_ADJUSTMENT: f32 = 0.01;
/// The projection width of SD 1.x's checker (ViT-L/14's).
const SD_PROJECTION_DIM: usize = 768;

/// What the checker found in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyVerdict {
    /// Any concept score above 0: the image is replaced by black.
    pub flagged: bool,
    /// Per special-care concept, diffusers' rounded score.
    pub special_scores: Vec<f32>,
    /// Per concept, diffusers' rounded score (after the special-care adjustment).
    pub concept_scores: Vec<f32>,
}

/// Concept embeddings and their thresholds, on the host (a few KiB).
#[derive(Debug)]
struct Concepts {
    /// Unit rows `[count, projection_dim]`.
    directions: Vec<Vec<f32>>,
    thresholds: Vec<f32>,
}

impl Concepts {
    fn load(w: &Weights<'_>, name: &str, count: usize, dim: usize) -> Result<Self> {
        let embeds = w.get_shaped(name, &[count, dim])?;
        let thresholds = w.get_shaped(&format!("{name}_weights"), &[count])?;
        Ok(Concepts {
            directions: embeds
                .outer_iter()
                .map(|row| normalized(&row.iter().copied().collect::<Vec<_>>()))
                .collect(),
            thresholds: thresholds.iter().copied().collect(),
        })
    }

    /// `round(cos − threshold + adjustment, 3)` per concept, with `adjustment` updated as each
    /// positive score sets it when `escalate` (the special-care pass).
    fn scores(&self, image: &[f32], adjustment: &mut f32, escalate: bool) -> Vec<f32> {
        self.directions
            .iter()
            .zip(&self.thresholds)
            .map(|(direction, &threshold)| {
                let score = round3(dot(image, direction) - threshold + *adjustment);
                if escalate && score > 0.0 {
                    *adjustment = SPECIAL_CARE_ADJUSTMENT;
                }
                score
            })
            .collect()
    }
}

/// The safety checker: CLIP vision tower, projection, concepts and preprocessing.
#[derive(Debug)]
pub struct SafetyChecker<B: Backend> {
    vision_model: ClipVisionTransformer<B>,
    visual_projection: Linear<B>,
    special_care: Concepts,
    concepts: Concepts,
    processor: ClipImageProcessor,
    source: PathBuf,
}

impl<B: Backend> SafetyChecker<B> {
    /// Load a checker from `path`:
    /// - a diffusers pipeline folder with `safety_checker/` (and `feature_extractor/`);
    /// - a `safety_checker/` folder (`config.json` + weights; preprocessing from a
    ///   `preprocessor_config.json` inside it or in a sibling `feature_extractor/`);
    /// - a single `.safetensors` file (config and preprocessor from a `config.json` /
    ///   `preprocessor_config.json` beside it, else SD 1.5's: ViT-L/14 at 224 px).
    pub fn load(backend: &B, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pipeline_checker = path.join("safety_checker");
        let (dir, files) = if path.is_dir() {
            let dir = if pipeline_checker.is_dir() {
                pipeline_checker.as_path()
            } else {
                path
            };
            (dir.to_path_buf(), component_files(dir)?)
        } else {
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (dir, vec![path.to_path_buf()])
        };
        let config_path = dir.join("config.json");
        let (vision, projection_dim) = if config_path.is_file() {
            let file = ClipConfigFile::from_file(&config_path)?;
            (file.vision_config, file.projection_dim)
        } else if path.is_dir() {
            return Err(Error::Io {
                path: config_path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no checker config"),
            });
        } else {
            (ClipVisionConfig::vit_l14(), SD_PROJECTION_DIM)
        };
        let processor = [
            dir.join("preprocessor_config.json"),
            dir.join("..")
                .join("feature_extractor")
                .join("preprocessor_config.json"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .map_or_else(
            || Ok(ClipImageProcessor::default()),
            ClipImageProcessor::from_file,
        )?;
        let store = WeightStore::open_component_files(Component::SafetyChecker, &files)?;
        Self::from_weights(
            backend,
            &store.component(Component::SafetyChecker)?,
            vision,
            projection_dim,
            processor,
        )
        .map(|checker| checker.with_source(path))
    }

    /// Build from a checker's weights (the root of `concept_embeds`, `vision_model…`).
    pub fn from_weights(
        backend: &B,
        weights: &Weights<'_>,
        vision: ClipVisionConfig,
        projection_dim: usize,
        processor: ClipImageProcessor,
    ) -> Result<Self> {
        let hidden = vision.hidden_size;
        // transformers 4 saved the tower as `vision_model.vision_model.…` (SD 1.5's file),
        // transformers 5 as `vision_model.…`.
        let nested = weights.at("vision_model.vision_model");
        let tower = if nested.contains("embeddings.class_embedding") {
            nested
        } else {
            weights.at("vision_model")
        };
        Ok(SafetyChecker {
            vision_model: ClipVisionTransformer::load(backend, &tower, vision)?,
            visual_projection: Linear::load(
                backend,
                &weights.at("visual_projection"),
                hidden,
                projection_dim,
                false,
            )?,
            special_care: Concepts::load(
                weights,
                "special_care_embeds",
                SPECIAL_CARE,
                projection_dim,
            )?,
            concepts: Concepts::load(weights, "concept_embeds", CONCEPTS, projection_dim)?,
            processor,
            source: PathBuf::new(),
        })
    }

    fn with_source(mut self, source: &Path) -> Self {
        self.source = source.to_path_buf();
        self
    }

    /// Where the checker was loaded from (empty when built from weights).
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }

    /// `image_embeds [n, projection_dim]` of preprocessed `pixel_values [n, 3, s, s]`.
    pub fn image_embeds(&self, backend: &B, pixel_values: &HostTensor) -> Result<HostTensor> {
        let pooled = self.vision_model.pooled(backend, pixel_values)?;
        backend.download(&self.visual_projection.forward(backend, &pooled)?)
    }

    /// diffusers' verdict on each row of `image_embeds`.
    pub fn verdicts(&self, image_embeds: &HostTensor) -> Vec<SafetyVerdict> {
        image_embeds
            .axis_iter(Axis(0))
            .map(|row| {
                let image = normalized(&row.iter().copied().collect::<Vec<_>>());
                let mut adjustment = 0.0;
                let special_scores = self.special_care.scores(&image, &mut adjustment, true);
                let concept_scores = self.concepts.scores(&image, &mut adjustment, false);
                SafetyVerdict {
                    flagged: concept_scores.iter().any(|&s| s > 0.0),
                    special_scores,
                    concept_scores,
                }
            })
            .collect()
    }

    /// Check `images` (one batch through the tower), as the pipeline's `run_safety_checker`.
    pub fn check(&self, backend: &B, images: &[RgbImage]) -> Result<Vec<SafetyVerdict>> {
        let pixel_values = self.processor.preprocess(images)?;
        Ok(self.verdicts(&self.image_embeds(backend, &pixel_values)?))
    }

    /// [`check`](Self::check), then replace each flagged image by black; the flags per image.
    pub fn filter(&self, backend: &B, images: &mut [RgbImage]) -> Result<Vec<bool>> {
        let verdicts = self.check(backend, images)?;
        for (image, verdict) in images.iter_mut().zip(&verdicts) {
            if verdict.flagged {
                *image = black_like(image)?;
            }
        }
        Ok(verdicts.iter().map(|v| v.flagged).collect())
    }
}

/// An all-black image of `image`'s size.
fn black_like(image: &RgbImage) -> Result<RgbImage> {
    RgbImage::new(image.width(), image.height(), vec![0; image.pixels().len()])
}

/// torch's `F.normalize`: `x / max(‖x‖, 1e-12)` in f32.
fn normalized(x: &[f32]) -> Vec<f32> {
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    x.iter().map(|v| v / norm).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// NumPy's `round(x, 3)` on an f32: `rint(x · 1000) / 1000`, each step in f32.
fn round3(x: f32) -> f32 {
    (x * 1000.0).round_ties_even() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_numpys_half_to_even_in_f32() {
        assert_eq!(round3(0.0003), 0.0);
        assert_eq!(round3(0.0004999), 0.0);
        assert_eq!(round3(0.0015), 0.002);
        assert_eq!(round3(-0.0126), -0.013);
    }
}
