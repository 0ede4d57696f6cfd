//! `sd serve`: AUTOMATIC1111's HTTP API (the server itself is the library's `server` module).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use sd_core::Result;
use stable_diffusion::preview::PreviewMethod;
use stable_diffusion::schedulers::parse_override;
use stable_diffusion::server::{BackendFactory, Limits, ModelSource, ServeConfig, serve};

use crate::cli::{BackendKind, PrecisionArg};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("models").args(["model", "models_dir"])))]
pub struct ServeArgs {
    /// The model to serve: an SD 1.5 .safetensors file or a diffusers folder (default: the
    /// bundled tiny test model of a source checkout).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Serve every checkpoint in this folder (.safetensors files and diffusers folders);
    /// clients switch with `sd_model_checkpoint`.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Component configs of single-file models that are not SD 1.5-shaped.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Address to listen on; anything but loopback exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1:7860")]
    pub listen: SocketAddr,
    /// HTTP basic auth on every route, as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASS")]
    pub api_auth: Option<String>,
    /// The folder of `<lora:NAME:WEIGHT>` prompt tags.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// The folder of textual-inversion embeddings (listed once the library reads them).
    #[arg(long, value_name = "DIR")]
    pub embedding_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// Requests that may wait behind the running one; more get 503 at once.
    #[arg(long, default_value_t = Limits::default().max_queue)]
    pub max_queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Largest width or height.
    #[arg(long, default_value_t = Limits::default().max_side)]
    pub max_side: usize,
    #[arg(long, default_value_t = Limits::default().max_steps)]
    pub max_steps: usize,
    /// Largest batch_size × n_iter.
    #[arg(long, default_value_t = Limits::default().max_images)]
    pub max_images: usize,
    /// Largest init image or mask in pixels (checked before decoding).
    #[arg(long, default_value_t = Limits::default().max_image_pixels)]
    pub max_image_pixels: u64,
    /// How `GET progress` makes `current_image`: approx (a linear latent→RGB map, latent
    /// resolution), taesd:PATH (TAESD's decode, full size) or none.
    #[arg(long, value_name = "METHOD", default_value = "approx")]
    pub preview: String,
    /// Change a key of the model's scheduler_config.json for every request that names a
    /// diffusers scheduler class: KEY=VALUE, repeatable (use_karras_sigmas=true,
    /// noise_sampler_seed=7, …). A1111's sampler names are not affected.
    #[arg(long, value_name = "KEY=VALUE")]
    pub scheduler_config: Vec<String>,
}

pub fn run(args: Box<ServeArgs>) -> Result<()> {
    let models = match (&args.model, &args.models_dir) {
        (_, Some(dir)) => ModelSource::Folder(dir.clone()),
        (model, None) => ModelSource::Single(crate::generate::resolve_model(
            model.as_deref(),
            &crate::generate::bundled_model(),
        )?),
    };
    let preview = PreviewMethod::parse(&args.preview)?;
    let scheduler_config = args
        .scheduler_config
        .iter()
        .map(|text| parse_override(text))
        .collect::<Result<Vec<_>>>()?;
    let config = ServeConfig {
        listen: args.listen,
        models,
        config_dir: args.config_dir.clone(),
        lora_dir: args.lora_dir.clone(),
        embedding_dir: args.embedding_dir.clone(),
        api_auth: args.api_auth.clone(),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_side: args.max_side,
            max_steps: args.max_steps,
            max_images: args.max_images,
            max_queue: args.max_queue,
            max_image_pixels: args.max_image_pixels,
        },
        preview,
        scheduler_config,
    };
    match (args.backend, args.precision) {
        (BackendKind::Cpu, precision) => {
            let factory: BackendFactory<_> =
                Arc::new(move || Ok(sd_core::cpu::CpuBackend::with_precision(precision.into())));
            serve(config, factory)
        }
        #[cfg(any(feature = "cuda", feature = "cuda-13"))]
        (BackendKind::Cuda, PrecisionArg::F32 | PrecisionArg::Auto) => {
            let factory: BackendFactory<_> = Arc::new(|| sd_cuda::CudaBackend::new(0));
            serve(config, factory)
        }
        #[cfg(not(any(feature = "cuda", feature = "cuda-13")))]
        (BackendKind::Cuda, PrecisionArg::F32 | PrecisionArg::Auto) => {
            Err(sd_core::Error::invalid_argument(
                "--backend",
                "this sd was built without the `cuda` feature (cargo build --features cuda)",
            ))
        }
        (BackendKind::Cuda, PrecisionArg::Bf16) => Err(sd_core::Error::invalid_argument(
            "--precision",
            "bf16 is a CPU precision; the CUDA backend stores f16 and computes in f32",
        )),
    }
}
