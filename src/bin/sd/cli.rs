//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sd",
    version,
    about = "Stable Diffusion 1.5 in Rust: txt2img, img2img and inpainting"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate images (txt2img; img2img with --init-image; inpainting with --mask).
    Generate(Box<GenerateArgs>),
    /// Print the generation parameters stored in a PNG (A1111's `parameters` text chunk).
    Info(InfoArgs),
    /// Show how a prompt is tokenized: tokens, ids and count (how long is my prompt?).
    Tokenize(TokenizeArgs),
    /// Time CLIP, a UNet step and a VAE decode (or any of --component) of full-size SD 1.5
    /// with random weights.
    Bench(BenchArgs),
    /// Make LoRA files: `extract` one from two checkpoints, `resize` one to a lower rank.
    Lora(crate::lora::LoraArgs),
    /// Answer AUTOMATIC1111's HTTP API (/sdapi/v1/txt2img, img2img, progress, options, …).
    #[cfg(feature = "server")]
    Serve(Box<crate::serve::ServeArgs>),
}

/// Where tensors live and compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The ndarray CPU backend (f32, all cores).
    Cpu,
    /// The first NVIDIA GPU through CUDA (f16 storage, f32 arithmetic).
    Cuda,
}

/// What the CPU backend's linear and conv layers compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 everywhere (the reference).
    F32,
    /// bf16 weights (half the memory) and products with f32 accumulation; the rest in f32.
    /// Without avx512_bf16 the weights are widened to f32 block by block inside each product
    /// (half the memory, up to ~15 % slower than f32).
    Bf16,
    /// The fastest within the accuracy rule on this CPU: bf16 with avx512_bf16 (its products on
    /// AMX tiles where the CPU has AMX-BF16), else f32 (CUDA: its own f16 storage). The
    /// startup line says which was picked.
    Auto,
}

impl From<PrecisionArg> for sd_core::cpu::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => sd_core::cpu::Precision::F32,
            PrecisionArg::Bf16 => sd_core::cpu::Precision::Bf16,
            PrecisionArg::Auto => sd_core::cpu::Precision::Auto,
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A diffusers folder (with model_index.json) or an SD 1.x single-file .safetensors.
    /// Without it, a source checkout runs the tiny random test model in fixtures/tiny-sd (its
    /// images are noise); an installed `sd` has no such model and asks for --model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Read the component configs of a single-file model from this diffusers folder instead of
    /// SD 1.5's built-in ones.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// The prompt (required, but for `--scheduler help`). One that starts with `-` must be
    /// joined to the option: --prompt="-a fox" or -p="-a fox" (otherwise it reads as another
    /// option).
    #[arg(long, short, required_unless_present = "scheduler", default_value = "")]
    pub prompt: String,
    #[arg(long, short, default_value = "")]
    pub negative_prompt: String,
    /// Image width in pixels (default: the model's, or the init image's).
    #[arg(long, short = 'W')]
    pub width: Option<usize>,
    /// Image height in pixels (default: the model's, or the init image's).
    #[arg(long, short = 'H')]
    pub height: Option<usize>,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less skips the unconditional pass.
    #[arg(long, default_value_t = 7.5)]
    pub cfg: f32,
    /// Sampler: an A1111 name ("Euler a", "DPM++ 2M", "DPM2 a Karras", …: A1111's k-diffusion
    /// samplers) or a diffusers class ("EulerAncestralDiscreteScheduler", "PNDM", "DDIM", …);
    /// `--scheduler help` lists them all (default: the model's own).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// A1111's schedule type for an A1111 sampler: Automatic (the sampler's own), Uniform,
    /// Karras, Exponential, Polyexponential, SGM Uniform.
    #[arg(long, value_name = "TYPE")]
    pub schedule_type: Option<String>,
    /// Change a key of the model's scheduler_config.json for this run: KEY=VALUE, repeatable
    /// (algorithm_type=sde-dpmsolver++, use_karras_sigmas=true, timestep_spacing=trailing,
    /// solver_order=3, final_sigmas_type=sigma_min, …). Values are JSON or plain strings.
    #[arg(long, value_name = "KEY=VALUE")]
    pub scheduler_config: Vec<String>,
    /// η of the samplers that take one: DDIM (default 0), TCD's γ (default 0, as diffusers'
    /// StableDiffusionPipeline passes it), A1111's ancestral samplers (default 1).
    #[arg(long)]
    pub eta: Option<f32>,
    /// Random source: cpu (torch's CPU generator, as diffusers) or nv (A1111's "NV", its
    /// imitation of torch's CUDA generator: the seeds of images made on NVIDIA GPUs).
    #[arg(long, value_enum, default_value_t = RngArg::Cpu)]
    pub rng: RngArg,
    /// Seed of the first image (random when absent); image i of a batch gets seed + i.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images to generate in one batch (at most 64: a batch is held in memory at once).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// A1111's Clip skip (1 = the last CLIP layer, 2 = the one before).
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// Start from this image (img2img; with --mask, inpainting): PNG, JPEG or WebP, stretched
    /// to --width/--height when those differ from its size (A1111's resize mode 0).
    #[arg(long, value_name = "IMG")]
    pub init_image: Option<PathBuf>,
    /// How far img2img departs from the init image, 0..=1.
    #[arg(long, default_value_t = 0.75)]
    pub strength: f64,
    /// Inpainting mask (PNG, JPEG or WebP): white repaints, black keeps (needs --init-image).
    #[arg(long, value_name = "IMG")]
    pub mask: Option<PathBuf>,
    /// Blur the mask by this σ in pixels before use, as A1111's "Mask blur" (OpenCV's
    /// Gaussian, at the mask file's size; 0: none).
    #[arg(long, value_name = "SIGMA", default_value_t = 0)]
    pub mask_blur: u32,
    /// What the masked region starts from, A1111's "Masked content": original, fill,
    /// latent-noise or latent-nothing.
    #[arg(long, value_name = "CONTENT", default_value = "original")]
    pub masked_content: stable_diffusion::MaskedContent,
    /// Read the prompt literally, as diffusers does (no (emphasis:1.2), no BREAK, 75 tokens).
    #[arg(long)]
    pub plain_prompt: bool,
    /// A LoRA file (kohya, LoCon, PEFT, LoHa, LoKr .safetensors) and its weight: FILE, FILE:W
    /// (text encoder and UNet) or FILE:TE:UNET. Repeatable.
    #[arg(long, value_name = "FILE[:WEIGHT]")]
    pub lora: Vec<String>,
    /// The folder of A1111's `<lora:NAME:WEIGHT>` / `<lora:NAME:TE:UNET>` prompt tags (NAME is a
    /// file stem there); the tags are removed from the prompt before encoding.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    #[command(flatten)]
    pub embeddings: EmbeddingArgs,
    #[command(flatten)]
    pub hires: crate::hires::HiresArgs,
    /// Do not run the safety checker a diffusers folder ships (run by default, as diffusers).
    #[arg(long, conflicts_with = "safety_checker")]
    pub no_safety_checker: bool,
    /// Run this safety checker: a `safety_checker/` folder (config.json + weights) or SD 1.5's
    /// checker as one .safetensors file. Flagged images are written black.
    #[arg(long, value_name = "PATH")]
    pub safety_checker: Option<PathBuf>,
    /// Decode the final image with another decoder: `taesd:PATH`, a TAESD (diffusers
    /// AutoencoderTiny) folder or .safetensors file. Much faster than the VAE on a CPU, a little
    /// less faithful; init images are still encoded by the VAE.
    #[arg(long, value_name = "taesd:PATH")]
    pub vae_decoder: Option<String>,
    /// Replace the model's VAE (A1111's --vae): a standalone .safetensors in LDM names
    /// (vae-ft-mse-840000-ema-pruned) or diffusers names, or a diffusers vae/ folder.
    #[arg(long, value_name = "FILE")]
    pub vae: Option<PathBuf>,
    /// Write a preview of the image every N steps (0: never) to --preview-file.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preview_every: usize,
    /// Where previews go (overwritten each time; a batch writes NAME-1.png, …).
    #[arg(long, value_name = "FILE", default_value = "sd-preview.png")]
    pub preview_file: PathBuf,
    /// How previews are made: approx (a linear latent→RGB map, latent resolution), taesd:PATH
    /// (TAESD, full resolution) or none.
    #[arg(long, value_name = "METHOD", default_value = "approx")]
    pub preview: String,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// CPU precision of the linear and conv layers.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// Output PNG; a batch writes NAME-1.png, NAME-2.png, … beside it. A folder (existing, or
    /// ending in /) holds sd-output.png (a batch: sd-output-1.png, …). Never one of the run's
    /// input files; written whole or not at all.
    #[arg(long, short, default_value = "sd-output.png")]
    pub output: PathBuf,
    /// Use the EMA copies of a full checkpoint's UNet (one with model_ema.* weights, such as
    /// v1-5-pruned.safetensors) instead of its trained weights, which diffusers and A1111 load.
    #[arg(long)]
    pub ema: bool,
    /// No progress bar or messages; errors still go to stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--rng`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RngArg {
    Cpu,
    Nv,
}

impl From<RngArg> for stable_diffusion::RngSource {
    fn from(arg: RngArg) -> Self {
        match arg {
            RngArg::Cpu => stable_diffusion::RngSource::Cpu,
            RngArg::Nv => stable_diffusion::RngSource::Nv,
        }
    }
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A PNG written by `sd generate` (or by A1111).
    pub image: PathBuf,
    /// Print one JSON object: {"prompt", "negative_prompt", "parameters": [[key, value], ...]}
    /// (the parameter line's pairs in order, quoted values unquoted).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    pub prompt: String,
    /// Print one JSON object: {"ids": [...], "count": N, "vectors": [...]} (ids unpadded, with
    /// start and end tokens, chunks concatenated; count without them; vectors: the embedding
    /// positions as {chunk, position, embedding, vector}).
    #[arg(long)]
    pub json: bool,
    /// Read the prompt literally, as diffusers does (one chunk, truncated).
    #[arg(long)]
    pub plain_prompt: bool,
    /// Use this diffusers folder's tokenizer instead of SD 1.5's.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub embeddings: EmbeddingArgs,
    #[command(flatten)]
    pub hires: crate::hires::HiresArgs,
}

/// Textual-inversion embeddings the prompt may name (A1111: the file stem, anywhere in the
/// prompt or negative prompt; plain mode: as diffusers' `load_textual_inversion(file, token=stem)`).
#[derive(Debug, Args)]
pub struct EmbeddingArgs {
    /// A textual-inversion embedding file (.safetensors, .pt, .bin). Repeatable.
    #[arg(long = "embedding", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A folder of embedding files: each is named by its file stem (unreadable files are skipped
    /// with a message).
    #[arg(long = "embedding-dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A piece of work `sd bench` times (tools/bench_torch.py times the same in PyTorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchComponent {
    /// CLIP text encoder on [negative, prompt], 77 tokens each.
    Clip,
    /// One UNet step at batch 2 (classifier-free guidance), 64×64 latents (512²).
    Unet,
    /// One UNet step at batch 1.
    UnetB1,
    /// VAE decode of 64×64 latents to 512×512.
    VaeDecode,
    /// VAE encode of a 512×512 image.
    VaeEncode,
    /// A whole 512×512 txt2img generation (`--steps` PNDM steps, guidance 7.5).
    Txt2img,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// CPU precision of the linear and conv layers.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// What to time (comma-separated). Each component's model is built, timed and dropped in
    /// turn; run one per process to read its peak memory alone.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["clip", "unet", "vae-decode"])]
    pub component: Vec<BenchComponent>,
    /// Timed runs per component, after one untimed warm-up (txt2img: no warm-up).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Inference steps of the txt2img component.
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// txt2img: hold the UNet and VAE only while they run, as `sd generate` does (each run
    /// after the first rebuilds them).
    #[arg(long)]
    pub low_memory: bool,
    /// txt2img: write the generated image here (to compare precisions: tools/psnr.py).
    #[arg(long, value_name = "PNG")]
    pub save_image: Option<std::path::PathBuf>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Latent side: 64 is a 512×512 image, 96 is 768², 128 is 1024² (UNet, VAE and txt2img).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub size: u64,
    /// Images per UNet step, VAE call or txt2img run (default: 2 for unet, the CFG pair; 1 for
    /// the others).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub batch: Option<u64>,
    /// Also time every backend op and print where the time went (per op kind).
    #[arg(long)]
    pub profile: bool,
    /// Print one JSON object per component instead of the table.
    #[arg(long)]
    pub json: bool,
}
