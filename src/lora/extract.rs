//! A LoRA from the difference of two checkpoints, as kohya's `extract_lora_from_models.py` makes
//! it: per targeted module, the top `rank` singular directions of `W_tuned − W_base`.
//!
//! ```no_run
//! use sd_core::weights::WeightStore;
//! use stable_diffusion::lora::extract::{ExtractOptions, extract};
//! use stable_diffusion::lora::writer::SavePrecision;
//! # fn main() -> stable_diffusion::Result<()> {
//! let base = WeightStore::open("v1-5-pruned-emaonly.safetensors")?;
//! let tuned = WeightStore::open("my-finetune.safetensors")?;
//! let options = ExtractOptions::new(32).conv_rank(Some(16));
//! let extracted = extract(&base, &tuned, &options)?;
//! extracted.file.write("finetune-lora.safetensors".as_ref(), SavePrecision::F16)?;
//! # Ok(()) }
//! ```
//!
//! Which modules, as kohya's SD 1.x LoRA network targets them:
//! - UNet: every linear and 1×1 conv inside a transformer (`…attentions.N.…`: q/k/v/out, the
//!   feed-forward, `proj_in`/`proj_out`) at `rank`; with a `conv_rank`, also the resnets'
//!   layers (3×3 `conv1`/`conv2` at `conv_rank`, `conv_shortcut` and `time_emb_proj` at `rank`)
//!   and the down/upsampler convs (at `conv_rank`);
//! - text encoder: the attention and MLP linears of every layer, at `rank`, but only when some
//!   weight differs by more than `min_diff` (kohya: "Text encoder is same. Extract U-Net only").
//!
//! Each module: `rank = min(rank, out, in)` (in channels, not `in·kh·kw`); `up = U_r·diag(S_r)`,
//! `down = V_rᵀ`; both clamped to `±q` with `q` the `clamp_quantile` of all their entries
//! together (torch's linear-interpolation quantile); `alpha = rank` (scale 1).
//!
//! kohya's clamp is lossy by design, and not only in the tails: `q` is a quantile of the *signed*
//! entries, so even at quantile 1 the negative side is cut at `−max`, and which side a direction's
//! entries fall on depends on the sign its SVD happened to pick. `clamp_quantile: None` keeps the
//! factors as the SVD gives them: then a LoRA extracted at (at least) its own rank from a model it
//! was merged into reproduces that LoRA's weights to f32 rounding.

use sd_core::weights::{Component, WeightStore};
use sd_core::{Error, Result};

use super::names::kohya_name;
use super::svd::Svd;
use super::writer::LoraFile;

/// kohya's extraction settings (`--dim`, `--conv_dim`, `--clamp_quantile`, `--min_diff`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractOptions {
    /// Rank of the linear and 1×1-conv modules.
    pub rank: usize,
    /// Rank of the 3×3 convs; `None` extracts no resnet or sampler layers.
    pub conv_rank: Option<usize>,
    /// Factor entries are clamped to ± this quantile of a module's entries (kohya: 0.99);
    /// `None`: no clamp (exact factors).
    pub clamp_quantile: Option<f64>,
    /// The text encoder is extracted only if some weight changed by more than this (kohya: 0.01).
    pub min_diff: f32,
}

impl ExtractOptions {
    /// kohya's defaults at `rank`: no convs, clamp quantile 0.99, min diff 0.01.
    pub fn new(rank: usize) -> Self {
        Self {
            rank,
            conv_rank: None,
            clamp_quantile: Some(0.99),
            min_diff: 0.01,
        }
    }

    /// Also extract the resnet and sampler layers, 3×3 convs at this rank.
    pub fn conv_rank(mut self, rank: Option<usize>) -> Self {
        self.conv_rank = rank;
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |name: &str, reason: String| Err(Error::invalid_argument(name, reason));
        if self.rank == 0 || self.conv_rank == Some(0) {
            return bad("--rank", "a LoRA rank is at least 1".into());
        }
        if let Some(quantile) = self.clamp_quantile
            && !(quantile > 0.0 && quantile <= 1.0)
        {
            return bad("--clamp-quantile", format!("{quantile} is not in (0, 1]"));
        }
        if self.min_diff.is_nan() || self.min_diff < 0.0 {
            return bad("--min-diff", format!("{} is not ≥ 0", self.min_diff));
        }
        Ok(())
    }
}

/// An extracted LoRA and what went into it.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The kohya-format file (diffusers block names, `alpha = rank`).
    pub file: LoraFile,
    pub unet_modules: usize,
    /// 0 when the text encoders did not differ by more than `min_diff`.
    pub text_encoder_modules: usize,
    /// The largest `|W_tuned − W_base|` over the text encoder's targeted weights.
    pub text_encoder_max_diff: f32,
    /// Modules whose truncated SVD did not converge to the tolerance (approximate factors).
    pub unconverged: Vec<String>,
}

/// How a targeted module is extracted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A linear or 1×1 conv: at `rank`.
    Plain,
    /// A 3×3 conv: at `conv_rank`.
    Conv,
}

/// The LoRA of `tuned − base` (see the module docs for which modules and how).
pub fn extract(
    base: &WeightStore,
    tuned: &WeightStore,
    options: &ExtractOptions,
) -> Result<Extracted> {
    options.check()?;
    let mut extracted = Extracted {
        file: LoraFile::default(),
        unet_modules: 0,
        text_encoder_modules: 0,
        text_encoder_max_diff: 0.0,
        unconverged: Vec::new(),
    };
    let text_encoder = targets(base, Component::TextEncoder, options)?;
    for (module, _) in &text_encoder {
        let (diff, _) = difference(base, tuned, Component::TextEncoder, module)?;
        let largest = diff.iter().fold(0.0_f32, |m, x| m.max(x.abs()));
        extracted.text_encoder_max_diff = extracted.text_encoder_max_diff.max(largest);
    }
    let mut work = targets(base, Component::Unet, options)?
        .into_iter()
        .map(|(module, kind)| (Component::Unet, module, kind))
        .collect::<Vec<_>>();
    if extracted.text_encoder_max_diff > options.min_diff {
        work.extend(
            text_encoder
                .into_iter()
                .map(|(module, kind)| (Component::TextEncoder, module, kind)),
        );
    }
    for (component, module, kind) in work {
        let (diff, shape) = difference(base, tuned, component, &module)?;
        let wanted = match kind {
            Kind::Plain => options.rank,
            Kind::Conv => options.conv_rank.unwrap_or(options.rank),
        };
        let rank = wanted.min(shape[0]).min(shape[1]);
        let columns = diff.len() / shape[0];
        let matrix = diff
            .into_shape_with_order((shape[0], columns))
            .map_err(|e| Error::invalid_argument(&module, e.to_string()))?
            .mapv(f64::from);
        let svd = Svd::top(matrix.view(), rank);
        let name = kohya_name(component, &module);
        if !svd.converged {
            extracted.unconverged.push(name.clone());
        }
        let (mut up, mut down) = svd.factors(rank);
        if let Some(quantile) = options.clamp_quantile {
            clamp_to_quantile(&mut up, &mut down, quantile);
        }
        let kernel = if shape.len() == 4 { &shape[2..] } else { &[] };
        extracted.file.insert_low_rank(
            &name,
            (".lora_down.weight", ".lora_up.weight"),
            (up, down),
            kernel,
            rank as f32,
        )?;
        match component {
            Component::TextEncoder => extracted.text_encoder_modules += 1,
            _ => extracted.unet_modules += 1,
        }
    }
    extracted.file.metadata = kohya_metadata(options);
    Ok(extracted)
}

/// The modules (paths without `.weight`) of `component` that kohya's network adapts.
fn targets(
    store: &WeightStore,
    component: Component,
    options: &ExtractOptions,
) -> Result<Vec<(String, Kind)>> {
    let weights = store.component(component)?;
    let mut out = Vec::new();
    for name in weights.names() {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        let shape = &weights.info(&name)?.shape;
        let kind = match shape.len() {
            2 => Kind::Plain,
            4 if shape[2..].iter().all(|&k| k == 1) => Kind::Plain,
            4 => Kind::Conv,
            _ => continue, // norms and biases
        };
        let wanted = match component {
            Component::TextEncoder => module.contains(".self_attn.") || module.contains(".mlp."),
            _ => {
                let in_transformer = module.contains(".attentions.");
                let in_resnet_or_sampler =
                    module.contains(".resnets.") || module.ends_with("samplers.0.conv");
                (in_transformer && kind == Kind::Plain)
                    || (options.conv_rank.is_some() && in_resnet_or_sampler)
            }
        };
        if wanted {
            out.push((module.to_string(), kind));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `W_tuned − W_base` of one module, and its shape; the shapes must agree.
fn difference(
    base: &WeightStore,
    tuned: &WeightStore,
    component: Component,
    module: &str,
) -> Result<(ndarray::ArrayD<f32>, Vec<usize>)> {
    let name = format!("{module}.weight");
    let before = base.component(component)?.get(&name)?;
    let after_weights = tuned.component(component)?;
    let after = after_weights.get(&name)?;
    if after.shape() != before.shape() {
        return Err(Error::TensorShape {
            name: after_weights.full_name(&name),
            path: tuned.origin().to_path_buf(),
            expected: before.shape().to_vec(),
            found: after.shape().to_vec(),
        });
    }
    let shape = before.shape().to_vec();
    Ok((after - before, shape))
}

/// kohya's clamp: both factors' entries limited to `±v`, `v` the `quantile` of all of them
/// together (signed values, linear interpolation between order statistics as torch.quantile).
pub fn clamp_to_quantile(
    up: &mut ndarray::Array2<f64>,
    down: &mut ndarray::Array2<f64>,
    quantile: f64,
) {
    let mut values: Vec<f64> = up.iter().chain(down.iter()).copied().collect();
    if values.is_empty() {
        return;
    }
    values.sort_by(f64::total_cmp);
    let position = quantile * (values.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    let limit = values[low] + (values[high] - values[low]) * (position - low as f64);
    // torch.clamp(x, -limit, limit) = min(max(x, -limit), limit), also when limit < 0.
    let clamp = |x: &mut f64| *x = x.max(-limit).min(limit);
    up.iter_mut().for_each(clamp);
    down.iter_mut().for_each(clamp);
}

/// The `ss_*` entries kohya's extraction writes.
fn kohya_metadata(options: &ExtractOptions) -> std::collections::BTreeMap<String, String> {
    let network_args = match options.conv_rank {
        Some(conv) => format!(
            r#"{{"conv_dim": "{conv}", "conv_alpha": "{:?}"}}"#,
            conv as f64
        ),
        None => "{}".to_string(),
    };
    [
        ("ss_v2", "False".to_string()),
        ("ss_base_model_version", "sd_v1".to_string()),
        ("ss_network_module", "networks.lora".to_string()),
        ("ss_network_dim", options.rank.to_string()),
        ("ss_network_alpha", format!("{:?}", options.rank as f64)),
        ("ss_network_args", network_args),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
