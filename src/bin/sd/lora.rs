//! `sd lora extract` and `sd lora resize`: kohya's `extract_lora_from_models.py` and
//! `resize_lora.py` (see `stable_diffusion::lora::extract` / `resize` for what they compute).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use sd_core::weights::WeightStore;
use sd_core::{Error, Result};
use stable_diffusion::lora::extract::{ExtractOptions, extract};
use stable_diffusion::lora::resize::{DynamicRank, ResizeOptions, resize};
use stable_diffusion::lora::writer::SavePrecision;

use crate::stdout::print;

#[derive(Debug, Args)]
pub struct LoraArgs {
    #[command(subcommand)]
    pub command: LoraCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoraCommand {
    /// A kohya LoRA from the difference of two checkpoints (truncated SVD per module).
    Extract(ExtractArgs),
    /// A LoRA at a lower rank (truncated SVD of each module's up · down).
    Resize(ResizeArgs),
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The original checkpoint (single file or diffusers folder).
    #[arg(long)]
    pub base: PathBuf,
    /// The fine-tuned checkpoint; the LoRA is `tuned − base`.
    #[arg(long)]
    pub tuned: PathBuf,
    /// Rank of the linear and 1×1-conv modules (kohya's --dim).
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    /// Also extract the resnet and sampler layers, 3×3 convs at this rank (kohya's --conv_dim).
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// Clamp factor entries to ± this quantile of each module's signed entries (kohya's rule,
    /// lossy even at 1: the negative side is cut at −max).
    #[arg(long, default_value_t = 0.99)]
    pub clamp_quantile: f64,
    /// Keep the factors exactly as the SVD gives them (no kohya clamp).
    #[arg(long, conflicts_with = "clamp_quantile")]
    pub no_clamp: bool,
    /// Extract the text encoder only if some weight changed by more than this.
    #[arg(long, default_value_t = 0.01)]
    pub min_diff: f32,
    #[arg(long, value_enum, default_value_t = SaveArg::F32)]
    pub save_precision: SaveArg,
    /// The LoRA file to write (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// The LoRA file to resize.
    pub input: PathBuf,
    /// The new rank (the maximum with --dynamic-method).
    #[arg(long, default_value_t = 4)]
    pub rank: usize,
    /// The new rank of conv modules (4-D factors); default: --rank.
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// Choose each module's rank from its singular values (needs --dynamic-param).
    #[arg(long, value_enum)]
    pub dynamic_method: Option<DynamicArg>,
    /// sv_ratio: the largest σ₁/σ kept (≥ 1); sv_cumulative, sv_fro: the fraction kept (0, 1].
    #[arg(long)]
    pub dynamic_param: Option<f64>,
    #[arg(long, value_enum, default_value_t = SaveArg::F32)]
    pub save_precision: SaveArg,
    /// Print each module's old and new rank and the Frobenius norm it keeps.
    #[arg(long)]
    pub verbose: bool,
    /// The LoRA file to write (.safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// The element type of the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveArg {
    F32,
    F16,
    Bf16,
}

/// kohya's dynamic rank rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // kohya's names: sv_ratio, sv_cumulative, sv_fro
pub enum DynamicArg {
    SvRatio,
    SvCumulative,
    SvFro,
}

impl From<SaveArg> for SavePrecision {
    fn from(arg: SaveArg) -> Self {
        match arg {
            SaveArg::F32 => SavePrecision::F32,
            SaveArg::F16 => SavePrecision::F16,
            SaveArg::Bf16 => SavePrecision::Bf16,
        }
    }
}

pub fn run(args: LoraArgs) -> Result<()> {
    match args.command {
        LoraCommand::Extract(args) => run_extract(args),
        LoraCommand::Resize(args) => run_resize(args),
    }
}

fn run_extract(args: ExtractArgs) -> Result<()> {
    check_output(&args.output)?;
    let base = WeightStore::open(&args.base)?;
    let tuned = WeightStore::open(&args.tuned)?;
    let options = ExtractOptions {
        clamp_quantile: (!args.no_clamp).then_some(args.clamp_quantile),
        min_diff: args.min_diff,
        ..ExtractOptions::new(args.rank).conv_rank(args.conv_rank)
    };
    let extracted = extract(&base, &tuned, &options)?;
    if extracted.text_encoder_modules == 0 {
        eprintln!(
            "sd: the text encoders differ by at most {} (≤ --min-diff {}): UNet only",
            extracted.text_encoder_max_diff, args.min_diff
        );
    }
    if !extracted.unconverged.is_empty() {
        eprintln!(
            "sd: warning: the SVD of {} module(s) stopped before converging (first: {}); their factors are approximate",
            extracted.unconverged.len(),
            extracted.unconverged[0]
        );
    }
    extracted
        .file
        .write(&args.output, args.save_precision.into())?;
    print(&format!(
        "{}: {} UNet and {} text-encoder modules at rank {}\n",
        args.output.display(),
        extracted.unet_modules,
        extracted.text_encoder_modules,
        args.rank
    ))
}

fn run_resize(args: ResizeArgs) -> Result<()> {
    check_output(&args.output)?;
    let dynamic = match (args.dynamic_method, args.dynamic_param) {
        (None, None) => None,
        (Some(method), Some(p)) => Some(match method {
            DynamicArg::SvRatio => DynamicRank::SvRatio(p),
            DynamicArg::SvCumulative => DynamicRank::SvCumulative(p),
            DynamicArg::SvFro => DynamicRank::SvFro(p),
        }),
        (Some(_), None) => {
            return Err(Error::invalid_argument(
                "--dynamic-method",
                "needs --dynamic-param",
            ));
        }
        (None, Some(_)) => {
            return Err(Error::invalid_argument(
                "--dynamic-param",
                "only applies with --dynamic-method",
            ));
        }
    };
    let options = ResizeOptions {
        conv_rank: args.conv_rank,
        dynamic,
        ..ResizeOptions::new(args.rank)
    };
    let resized = resize(&args.input, &options)?;
    if args.verbose {
        for module in &resized.modules {
            print(&format!(
                "{:75} | rank {} -> {}, alpha {}, fro retained {:.1}%\n",
                module.key,
                module.old_rank,
                module.new_rank,
                module.new_alpha,
                100.0 * module.fro_retained
            ))?;
        }
    }
    if !resized.copied.is_empty() {
        eprintln!(
            "sd: {} module(s) are not low-rank LoRA (LoHa/LoKr) and were copied unchanged (first: {})",
            resized.copied.len(),
            resized.copied[0]
        );
    }
    resized
        .file
        .write(&args.output, args.save_precision.into())?;
    print(&format!(
        "{}: {} modules resized\n",
        args.output.display(),
        resized.modules.len()
    ))
}

/// Only safetensors is written: say so before any work.
fn check_output(path: &Path) -> Result<()> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        Ok(())
    } else {
        Err(Error::invalid_argument(
            "--output",
            format!("{}: LoRA files are written as .safetensors", path.display()),
        ))
    }
}
