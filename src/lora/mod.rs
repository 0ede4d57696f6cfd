//! LoRA files: read any common format, resolve its modules against the loaded model, and merge
//! the deltas into the weights as a [`WeightStore`] overlay (in f32, before a backend packs or
//! uploads them, so it works the same for f32, bf16 and the GPU).
//!
//! ```no_run
//! use stable_diffusion::lora::LoraSpec;
//! use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
//! # fn main() -> stable_diffusion::Result<()> {
//! let options = LoadOptions::default()
//!     .lora(LoraSpec::new("add_detail.safetensors", 0.8))
//!     .lora(LoraSpec::new("style.safetensors", 1.0).text_encoder_multiplier(0.5));
//! let sd = StableDiffusion::load("v1-5-pruned-emaonly.safetensors", options)?;
//! let image = sd.generate(&GenerationRequest::new("a castle"))?;
//! # let _ = image; Ok(()) }
//! ```
//!
//! - [`format`](mod@format): the file formats (kohya, LoCon, PEFT, old diffusers, LoHa, LoKr) and their scale.
//! - [`names`]: which model module each key adapts (diffusers, LDM or PEFT names).
//! - [`extract`](mod@extract) and [`resize`](mod@resize): new LoRA files from two checkpoints or from a
//!   LoRA of higher rank (kohya's scripts), by the truncated SVD of [`svd`], written by [`writer`].
//!
//! What each module becomes: `W + multiplier · scale · ΔW`, with the text-encoder multiplier for
//! CLIP's modules and the UNet multiplier for the UNet's (A1111's `<lora:name:te:unet>`).

pub mod extract;
pub mod format;
pub mod names;
pub mod resize;
pub mod svd;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sd_core::weights::{Component, Overlay, SafetensorsFile, UnetLayout, WeightStore};
use sd_core::{Error, HostTensor, Result};

use format::{ModuleDelta, read_modules};
use names::ModuleNames;

/// A LoRA file and how strongly to apply it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    /// Multiplier of its text-encoder deltas.
    pub text_encoder: f32,
    /// Multiplier of its UNet deltas.
    pub unet: f32,
}

impl LoraSpec {
    /// `path` at `multiplier` for both the text encoder and the UNet.
    pub fn new(path: impl Into<PathBuf>, multiplier: f32) -> Self {
        Self {
            path: path.into(),
            text_encoder: multiplier,
            unet: multiplier,
        }
    }

    /// A separate text-encoder multiplier (A1111's `<lora:name:te:unet>`).
    pub fn text_encoder_multiplier(mut self, multiplier: f32) -> Self {
        self.text_encoder = multiplier;
        self
    }

    /// Parse the CLI's `FILE[:WEIGHT[:UNET_WEIGHT]]` (one weight: both; two: text encoder, UNet).
    pub fn parse(text: &str) -> Result<Self> {
        let (path, weights) = split_weights(text);
        let bad = |reason: String| Error::invalid_argument("--lora", reason);
        let parse = |w: &str| -> Result<f32> {
            w.parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(format!("`{w}` in `{text}` is not a finite number")))
        };
        let (te, unet) = match weights.as_slice() {
            [] => (1.0, 1.0),
            [both] => {
                let w = parse(both)?;
                (w, w)
            }
            [te, unet] => (parse(te)?, parse(unet)?),
            _ => return Err(bad(format!("`{text}`: at most two weights"))),
        };
        if path.is_empty() {
            return Err(bad(format!("`{text}` names no file")));
        }
        Ok(Self {
            path: PathBuf::from(path),
            text_encoder: te,
            unet,
        })
    }
}

/// `FILE:W1:W2` → (`FILE`, [W1, W2]): up to two trailing fields that read as numbers.
fn split_weights(text: &str) -> (&str, Vec<&str>) {
    let mut path = text;
    let mut weights = Vec::new();
    while weights.len() < 2 {
        match path.rsplit_once(':') {
            // Anything that reads as a number (nan and inf included, refused later by name).
            Some((rest, last)) if last.parse::<f32>().is_ok() => {
                weights.push(last);
                path = rest;
            }
            _ => break,
        }
    }
    weights.reverse();
    (path, weights)
}

/// One delta applied to one module weight.
#[derive(Debug)]
struct Term {
    delta: Arc<ModuleDelta>,
    /// `multiplier · scale`.
    factor: f32,
    /// The file it came from (for errors).
    file: PathBuf,
}

/// What loading a set of LoRA files against a model found, per file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoraReport {
    pub files: Vec<LoraFileReport>,
}

/// What one LoRA file matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraFileReport {
    pub path: PathBuf,
    /// Modules of the model it adapts.
    pub applied: usize,
    /// Its keys that fit no module of this model (module keys without the tensor suffix).
    pub skipped: Vec<String>,
}

/// The deltas of several LoRA files, by the model weight they change.
#[derive(Debug)]
pub struct LoraOverlay {
    terms: HashMap<(Component, String), Vec<Term>>,
    description: String,
}

impl LoraOverlay {
    /// Read `specs` and resolve their modules against the model in `store` (`unet_layout`: the
    /// UNet's LDM numbering, for files that use LDM names). Keys that fit no module of the model
    /// are skipped and reported; a file none of whose keys fit is an error, as is a delta whose
    /// shape does not fit its module.
    pub fn load(
        store: &WeightStore,
        unet_layout: &UnetLayout,
        specs: &[LoraSpec],
    ) -> Result<(Self, LoraReport)> {
        let names = ModuleNames::of(store, unet_layout)?;
        let mut terms: HashMap<(Component, String), Vec<Term>> = HashMap::new();
        let mut report = LoraReport::default();
        for spec in specs {
            let file = SafetensorsFile::open(&spec.path)?;
            reject_foreign(&file)?;
            let (modules, unknown) = read_modules(&file)?;
            let mut skipped = unknown;
            let mut applied = 0;
            for module in modules {
                let Some((component, path)) = names.resolve(&module.key) else {
                    skipped.push(module.key.clone());
                    continue;
                };
                let multiplier = match component {
                    Component::TextEncoder => spec.text_encoder,
                    _ => spec.unet,
                };
                let weight = format!("{path}.weight");
                check_fits(store, component, &weight, &module, &spec.path)?;
                applied += 1;
                terms.entry((component, weight)).or_default().push(Term {
                    factor: multiplier * module.scale,
                    delta: Arc::new(module),
                    file: spec.path.clone(),
                });
            }
            if applied == 0 {
                return Err(Error::InvalidSafetensors {
                    path: spec.path.clone(),
                    reason: format!(
                        "none of its keys fit a module of this SD 1.x model (first: {})",
                        skipped.first().map_or("<no keys>", String::as_str)
                    ),
                });
            }
            report.files.push(LoraFileReport {
                path: spec.path.clone(),
                applied,
                skipped,
            });
        }
        let description = specs
            .iter()
            .map(|s| s.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok((
            Self {
                terms,
                description: format!("LoRA {description}"),
            },
            report,
        ))
    }

    /// `store` with these deltas on top.
    pub fn apply_to(self, store: &WeightStore) -> WeightStore {
        store.with_overlay(Arc::new(self))
    }
}

impl Overlay for LoraOverlay {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn touches(&self, component: Component, name: &str) -> bool {
        self.terms.contains_key(&(component, name.to_string()))
    }

    fn apply(
        &self,
        component: Component,
        name: &str,
        below: Option<HostTensor>,
    ) -> Result<HostTensor> {
        let mut weight = below.ok_or_else(|| {
            Error::invalid_argument(
                name,
                format!("{} adapts a weight the model lacks", self.description),
            )
        })?;
        for term in self
            .terms
            .get(&(component, name.to_string()))
            .into_iter()
            .flatten()
        {
            let delta = term.delta.delta()?;
            let shape = weight.shape().to_vec();
            if !fits(&shape, delta.nrows(), delta.ncols()) {
                return Err(shape_error(
                    &term.file,
                    &term.delta.key,
                    &shape,
                    delta.shape(),
                ));
            }
            // W + multiplier · scale · ΔW on the weight as a matrix [out, in · kh · kw] (a linear
            // delta fits a 1×1 conv weight and the reverse); a delta with fewer input channels
            // than a conv covers its first ones.
            let reshape_error =
                |e: ndarray::ShapeError| Error::invalid_argument(name, e.to_string());
            let columns = weight.len() / shape[0];
            let mut flat = weight
                .into_shape_with_order((shape[0], columns))
                .map_err(reshape_error)?;
            flat.slice_mut(ndarray::s![.., ..delta.ncols()])
                .zip_mut_with(&delta, |w, d| *w += term.factor * d);
            weight = flat.into_shape_with_order(shape).map_err(reshape_error)?;
        }
        Ok(weight)
    }
}

/// The module's factors fit together, and its ΔW fits the weight it adapts (see [`fits`]).
fn check_fits(
    store: &WeightStore,
    component: Component,
    weight: &str,
    module: &ModuleDelta,
    file: &Path,
) -> Result<()> {
    let delta = module.shape()?;
    let weights = store.component(component)?;
    let Ok(info) = weights.info(weight) else {
        return Ok(()); // synthetic weights: checked when applied
    };
    let kernel_fits =
        delta.kernel.is_empty() || info.shape.get(2..) == Some(delta.kernel.as_slice());
    if !fits(&info.shape, delta.rows, delta.cols) || !kernel_fits {
        return Err(shape_error(file, &module.key, &info.shape, &delta.dims()));
    }
    Ok(())
}

/// Whether ΔW `[rows, cols]` fits a weight of `shape`: the same matrix (a linear and a 1×1 conv
/// alike), or, for a conv with more input channels than the delta — the 9-channel inpainting
/// UNet's `conv_in` under a LoRA trained on a 4-channel one — its first input channels (A1111
/// pads such a delta with zeros).
fn fits(shape: &[usize], rows: usize, cols: usize) -> bool {
    let Some((&out, rest)) = shape.split_first() else {
        return false;
    };
    let weight_cols: usize = rest.iter().product();
    let kernel: usize = rest.iter().skip(1).product();
    out == rows
        && (cols == weight_cols
            || (shape.len() == 4 && cols < weight_cols && cols > 0 && cols.is_multiple_of(kernel)))
}

fn shape_error(file: &Path, key: &str, expected: &[usize], found: &[usize]) -> Error {
    Error::TensorShape {
        name: format!("{key} (LoRA delta)"),
        path: file.to_path_buf(),
        expected: expected.to_vec(),
        found: found.to_vec(),
    }
}

/// SDXL and SD 2.x LoRAs: refuse by their keys before matching names.
fn reject_foreign(file: &SafetensorsFile) -> Result<()> {
    let sdxl = file.names().find(|k| {
        k.starts_with("lora_te1_") || k.starts_with("lora_te2_") || k.starts_with("text_encoder_2.")
    });
    if let Some(key) = sdxl {
        return Err(Error::UnsupportedModel {
            path: file.path().to_path_buf(),
            reason: format!("an SDXL LoRA (key {key}): this is an SD 1.x pipeline"),
        });
    }
    Ok(())
}

/// A `<lora:NAME:TE[:UNET]>` tag of an A1111 prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLora {
    pub name: String,
    pub text_encoder: f32,
    pub unet: f32,
}

/// The prompt without its `<lora:…>` tags (A1111 removes them before encoding), and the tags.
/// The weight defaults to 1 and the UNet weight to the text-encoder one, as in A1111.
pub fn take_prompt_loras(prompt: &str) -> Result<(String, Vec<PromptLora>)> {
    let mut text = String::with_capacity(prompt.len());
    let mut loras = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("<lora:") {
        let Some(length) = rest[start..].find('>') else {
            break; // an unclosed tag is text, as A1111's regex leaves it
        };
        let tag = &rest[start + "<lora:".len()..start + length];
        let mut fields = tag.split(':');
        let name = fields.next().unwrap_or_default().trim();
        let bad = |reason: String| Error::invalid_argument("prompt", reason);
        if name.is_empty() {
            return Err(bad(format!("<lora:{tag}> names no LoRA")));
        }
        let weight = |field: Option<&str>, default: f32| -> Result<f32> {
            match field.map(str::trim) {
                None => Ok(default),
                Some(w) => w
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(format!("<lora:{tag}>: `{w}` is not a finite number"))),
            }
        };
        let text_encoder = weight(fields.next(), 1.0)?;
        let unet = weight(fields.next(), text_encoder)?;
        if fields.next().is_some() {
            return Err(bad(format!("<lora:{tag}>: at most NAME:TE:UNET")));
        }
        loras.push(PromptLora {
            name: name.to_string(),
            text_encoder,
            unet,
        });
        text.push_str(&rest[..start]);
        rest = &rest[start + length + 1..];
    }
    text.push_str(rest);
    Ok((text, loras))
}

/// The LoRA file `name` stands for in `dir` (`NAME.safetensors`); an unknown name is an error
/// listing what the folder holds.
pub fn find_in_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let candidate = dir.join(format!("{name}.safetensors"));
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::invalid_argument(
            "prompt",
            format!("<lora:{name}>: a LoRA name is a file stem in the LoRA folder, not a path"),
        ));
    }
    if candidate.is_file() {
        return Ok(candidate);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut known: Vec<String> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "safetensors" {
                return None;
            }
            Some(path.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    known.sort();
    Err(Error::invalid_argument(
        "prompt",
        format!(
            "<lora:{name}>: no {name}.safetensors in {}; it holds: {}",
            dir.display(),
            if known.is_empty() {
                "no LoRA files".to_string()
            } else {
                known.join(", ")
            }
        ),
    ))
}
