//! Which safety checker a model runs, and running it on a generation's images.
//!
//! diffusers runs the checker a pipeline folder ships (`safety_checker/` listed in
//! `model_index.json`); so does [`SafetyCheckerChoice::FromModel`], the default. A single-file
//! checkpoint has none unless one is named ([`SafetyCheckerChoice::File`]).

use std::path::{Path, PathBuf};

use sd_clip::SafetyChecker;
use sd_core::pipeline::RgbImage;
use sd_core::{Backend, Result};

/// Whether a loaded model checks its images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SafetyCheckerChoice {
    /// The checker of a diffusers folder whose `model_index.json` lists one; none otherwise.
    #[default]
    FromModel,
    /// No checker, even where the model ships one.
    Off,
    /// This checker ([`SafetyChecker::load`]: a `safety_checker/` folder, a pipeline folder
    /// that has one, or a `.safetensors` file of SD 1.5's checker).
    File(PathBuf),
}

impl SafetyCheckerChoice {
    /// The checker to load for the model at `model` (a folder or a single file), if any.
    pub(crate) fn resolve(&self, model: &Path) -> Option<PathBuf> {
        match self {
            SafetyCheckerChoice::Off => None,
            SafetyCheckerChoice::File(path) => Some(path.clone()),
            SafetyCheckerChoice::FromModel => {
                ships_safety_checker(model).then(|| model.join("safety_checker"))
            }
        }
    }
}

/// Whether `dir` is a diffusers folder whose `model_index.json` lists a safety checker (as
/// `["stable_diffusion", "StableDiffusionSafetyChecker"]`; `[null, null]` lists none).
fn ships_safety_checker(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("model_index.json")) else {
        return false;
    };
    let Ok(index) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    index
        .get("safety_checker")
        .and_then(serde_json::Value::as_array)
        .and_then(|entry| entry.first())
        .is_some_and(|library| !library.is_null())
}

/// A checker held resident, or loaded for each check and dropped after (low-memory models:
/// SD 1.5's checker is 1.2 GB of f32 weights, not worth holding through the denoising).
#[derive(Debug)]
pub(crate) enum CheckerSlot<B: Backend> {
    Resident(Box<SafetyChecker<B>>),
    OnDemand(PathBuf),
}

impl<B: Backend> CheckerSlot<B> {
    /// Load (or, on demand, only check that it loads) the checker at `path`.
    pub(crate) fn load(backend: &B, path: PathBuf, resident: bool) -> Result<Self> {
        let checker = SafetyChecker::load(backend, &path)?;
        Ok(if resident {
            CheckerSlot::Resident(Box::new(checker))
        } else {
            CheckerSlot::OnDemand(path)
        })
    }

    /// Check `images`, replacing each flagged one by black; the flags per image.
    pub(crate) fn filter(&self, backend: &B, images: &mut [RgbImage]) -> Result<Vec<bool>> {
        match self {
            CheckerSlot::Resident(checker) => checker.filter(backend, images),
            CheckerSlot::OnDemand(path) => {
                SafetyChecker::load(backend, path)?.filter(backend, images)
            }
        }
    }
}
