//! A LoRA at a lower rank, as kohya's `resize_lora.py` makes it: per low-rank module, the top
//! singular directions of `up · down`, with `alpha` rescaled so the module's scale is unchanged.
//!
//! ```no_run
//! use stable_diffusion::lora::resize::{ResizeOptions, resize};
//! use stable_diffusion::lora::writer::SavePrecision;
//! # fn main() -> stable_diffusion::Result<()> {
//! let resized = resize("style-rank128.safetensors".as_ref(), &ResizeOptions::new(32))?;
//! resized.file.write("style-rank32.safetensors".as_ref(), SavePrecision::F16)?;
//! # Ok(()) }
//! ```
//!
//! Per module with `lora_down`/`lora_up` (or PEFT's `lora_A`/`lora_B`, or old diffusers'
//! `down`/`up`): `W = up · down` (`[out, in·kh·kw]`, without the scale); its SVD; the new rank
//! is `rank` (`conv_rank` for modules whose `down` is 4-D, 1×1 convs included, as kohya), or the
//! dynamic rule's (capped at that); a zero matrix (`σ₁ ≤ 1e-6`) gets rank 1. The new factors are
//! `U_r·diag(S_r)` and `V_rᵀ` under the module's own key names, and `alpha = scale · new_rank`
//! with the module's scale (`alpha / old_rank`, PEFT's `lora_alpha / r`, or 1). Other modules
//! (LoHa, LoKr) and every other tensor are copied unchanged, as kohya does.
//!
//! The dynamic rules (kohya's `--dynamic_method`, the index `i` counted from 0, new rank `i + 1`,
//! `i` clamped to `[0, len(S) − 1]` with `len(S) = min(out, in·kh·kw)`):
//! - `sv_ratio` `t`: `i` = (number of `σ > σ₁ / t`) − 1;
//! - `sv_cumulative` `t`: `i` = the first index whose `Σ_{j≤i} σ_j / Σ σ ≥ t`;
//! - `sv_fro` `t`: `i` = the first index whose `Σ_{j≤i} σ_j² / Σ σ² ≥ t²`.

use std::path::Path;

use ndarray::Array2;
use sd_core::weights::SafetensorsFile;
use sd_core::{Error, Result};

use super::format::{DeltaKind, read_modules};
use super::svd::Svd;
use super::writer::LoraFile;

/// kohya's `MIN_SV`: a module whose largest singular value is below this is a zero matrix.
const MIN_SINGULAR_VALUE: f64 = 1e-6;

/// The key suffixes of a low-rank module's factors, `(down, up)`, by format.
const LOW_RANK_SUFFIXES: [(&str, &str); 3] = [
    (".lora_down.weight", ".lora_up.weight"),
    (".lora_A.weight", ".lora_B.weight"),
    (".down.weight", ".up.weight"),
];

/// How each module's new rank is chosen (kohya's `--dynamic_method` / `--dynamic_param`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DynamicRank {
    /// Keep the directions whose singular value is above `σ₁ / ratio`.
    SvRatio(f64),
    /// Keep the fewest directions whose singular values sum to this fraction of the total.
    SvCumulative(f64),
    /// Keep the fewest directions that retain this fraction of the Frobenius norm.
    SvFro(f64),
}

/// kohya's resize settings (`--new_rank`, `--new_conv_rank`, `--dynamic_method`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeOptions {
    /// The new rank (the maximum under a dynamic rule).
    pub rank: usize,
    /// The new rank of modules with 4-D factors; `None`: `rank`.
    pub conv_rank: Option<usize>,
    pub dynamic: Option<DynamicRank>,
}

impl ResizeOptions {
    /// Every module to `rank` (fewer if it has fewer).
    pub fn new(rank: usize) -> Self {
        Self {
            rank,
            conv_rank: None,
            dynamic: None,
        }
    }

    fn check(&self) -> Result<()> {
        if self.rank == 0 || self.conv_rank == Some(0) {
            return Err(Error::invalid_argument(
                "--rank",
                "a LoRA rank is at least 1",
            ));
        }
        let parameter = match self.dynamic {
            None => return Ok(()),
            Some(DynamicRank::SvRatio(p)) => (p, p >= 1.0),
            Some(DynamicRank::SvCumulative(p) | DynamicRank::SvFro(p)) => (p, p > 0.0 && p <= 1.0),
        };
        match parameter {
            (p, true) if p.is_finite() => Ok(()),
            (p, _) => Err(Error::invalid_argument(
                "--dynamic-param",
                format!("{p} is out of range (sv_ratio: ≥ 1; sv_cumulative, sv_fro: in (0, 1])"),
            )),
        }
    }
}

/// What resizing did to one module.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizedModule {
    pub key: String,
    pub old_rank: usize,
    pub new_rank: usize,
    pub new_alpha: f32,
    /// `‖S_kept‖ / ‖S‖`: the fraction of the module's Frobenius norm the new rank keeps.
    pub fro_retained: f64,
}

/// A resized LoRA and what happened to each module.
#[derive(Debug, Clone)]
pub struct Resized {
    pub file: LoraFile,
    pub modules: Vec<ResizedModule>,
    /// Modules that are not low-rank (LoHa, LoKr), copied unchanged.
    pub copied: Vec<String>,
}

/// `path` resized (see the module docs).
pub fn resize(path: &Path, options: &ResizeOptions) -> Result<Resized> {
    options.check()?;
    let file = SafetensorsFile::open(path)?;
    let mut out = LoraFile::default();
    for key in file.names() {
        out.tensors.insert(key.to_string(), file.get(key)?);
    }
    out.metadata = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (modules, _unknown) = read_modules(&file)?;
    let mut resized = Vec::new();
    let mut copied = Vec::new();
    for module in modules {
        let DeltaKind::LowRank { down, .. } = &module.kind else {
            copied.push(module.key.clone());
            continue;
        };
        let suffixes = LOW_RANK_SUFFIXES
            .into_iter()
            .find(|(down_suffix, _)| file.info(&format!("{}{down_suffix}", module.key)).is_some())
            .ok_or_else(|| Error::InvalidSafetensors {
                path: path.to_path_buf(),
                reason: format!("module {}: no lora_down/lora_A/down tensor", module.key),
            })?;
        let old_rank = down.shape()[0];
        let product = module.delta()?.mapv(f64::from);
        let svd = Svd::top(product.view(), old_rank);
        let limit = match down.ndim() {
            4 => options.conv_rank.unwrap_or(options.rank),
            _ => options.rank,
        };
        let full_length = product.nrows().min(product.ncols());
        let new_rank = new_rank(&svd.s, full_length, limit, options.dynamic);
        let new_alpha = module.scale * new_rank as f32;
        let kept: f64 = svd.s[..new_rank.min(svd.s.len())]
            .iter()
            .map(|s| s * s)
            .sum();
        let total: f64 = svd.s.iter().map(|s| s * s).sum();
        for suffix in [suffixes.0, suffixes.1, ".alpha", ".scale"] {
            out.tensors.remove(&format!("{}{suffix}", module.key));
        }
        let kernel = down.shape().get(2..).unwrap_or_default().to_vec();
        out.insert_low_rank(
            &module.key,
            suffixes,
            padded_factors(&svd, new_rank, &product),
            &kernel,
            new_alpha,
        )?;
        resized.push(ResizedModule {
            key: module.key.clone(),
            old_rank,
            new_rank,
            new_alpha,
            fro_retained: (kept / total).sqrt(),
        });
    }
    update_metadata(&mut out, options, &resized);
    Ok(Resized {
        file: out,
        modules: resized,
        copied,
    })
}

/// The factors at `rank`, which may exceed the directions the SVD found (a rank above the
/// module's): kohya then keeps directions of singular value 0, here zero rows and columns.
fn padded_factors(svd: &Svd, rank: usize, product: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    let (up, down) = svd.factors(rank);
    if up.ncols() == rank {
        return (up, down);
    }
    let mut padded_up = Array2::zeros((product.nrows(), rank));
    let mut padded_down = Array2::zeros((rank, product.ncols()));
    padded_up
        .slice_mut(ndarray::s![.., ..up.ncols()])
        .assign(&up);
    padded_down
        .slice_mut(ndarray::s![..down.nrows(), ..])
        .assign(&down);
    (padded_up, padded_down)
}

/// kohya's `rank_resize`: the new rank from the singular values `s` (descending; those past
/// `s.len()` up to `full_length` are 0), the fixed or maximum rank `limit` and the rule.
pub fn new_rank(s: &[f64], full_length: usize, limit: usize, rule: Option<DynamicRank>) -> usize {
    let last = full_length.saturating_sub(1);
    let first_reaching = |weights: Vec<f64>, target: f64| -> usize {
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        weights
            .iter()
            .position(|w| {
                sum += w;
                sum / total >= target
            })
            .unwrap_or(weights.len())
    };
    let chosen = match rule {
        None => limit,
        Some(rule) => {
            let index = match rule {
                DynamicRank::SvRatio(ratio) => {
                    let threshold = s.first().copied().unwrap_or(0.0) / ratio;
                    s.iter()
                        .filter(|&&x| x > threshold)
                        .count()
                        .saturating_sub(1)
                }
                DynamicRank::SvCumulative(target) => first_reaching(s.to_vec(), target),
                DynamicRank::SvFro(target) => {
                    first_reaching(s.iter().map(|x| x * x).collect(), target * target)
                }
            };
            index.min(last) + 1
        }
    };
    if s.first()
        .is_none_or(|&largest| largest <= MIN_SINGULAR_VALUE)
    {
        1
    } else {
        chosen.min(limit).min(full_length.max(1))
    }
}

/// kohya's metadata after a resize: the new dim and alpha (or "Dynamic"), and a comment.
fn update_metadata(file: &mut LoraFile, options: &ResizeOptions, modules: &[ResizedModule]) {
    let old = modules.iter().map(|m| m.old_rank).max().unwrap_or(0);
    let comment = file
        .metadata
        .get("ss_training_comment")
        .cloned()
        .unwrap_or_default();
    let (dim, alpha, what) = match options.dynamic {
        None => {
            let alpha = modules.last().map_or(0.0, |m| m.new_alpha);
            (
                options.rank.to_string(),
                format!("{alpha:?}"),
                format!("dimension is resized from {old} to {}", options.rank),
            )
        }
        Some(rule) => (
            "Dynamic".to_string(),
            "Dynamic".to_string(),
            format!("Dynamic resize with {rule:?} from {old}"),
        ),
    };
    file.metadata.insert("ss_network_dim".into(), dim);
    file.metadata.insert("ss_network_alpha".into(), alpha);
    file.metadata
        .insert("ss_training_comment".into(), format!("{what}; {comment}"));
}
