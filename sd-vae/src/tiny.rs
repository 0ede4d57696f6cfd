//! diffusers' `AutoencoderTiny`: TAESD (madebyollin/taesd), a small distilled codec that trades
//! some fidelity for speed, for previews and quick final decodes.
//!
//! Its latents are in the UNet's scale already (`scaling_factor` 1, where the full VAE wants
//! the UNet's latents divided by 0.18215). The encoder maps `[-1, 1]` images to `[0, 1]` then
//! through plain convolutions and residual blocks; the decoder soft-clamps latents to ±3
//! (`3 · tanh(z / 3)`), then blocks, nearest upsampling and convolutions, and maps `[0, 1]` back
//! to `[-1, 1]`. Module indices follow diffusers' `nn.Sequential`s (activations and upsamplers
//! take an index but hold no weights), so the struct tree reads like the checkpoint:
//! `decoder.layers.3.conv.0.weight`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use sd_core::config_file::{config_error, read_config};
use sd_core::nn::Conv2d;
use sd_core::weights::diffusers::component_files;
use sd_core::weights::{Component, WeightStore, Weights};
use sd_core::{Backend, Conv2dParams, LatentCodec, LatentDist, Result, UnaryOp};

/// The fields of an `AutoencoderTiny` `config.json`, at diffusers' defaults when missing (the
/// defaults are TAESD for SD 1.x).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TinyConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    pub num_encoder_blocks: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub act_fn: String,
    pub upsample_fn: String,
    pub latent_channels: usize,
    pub upsampling_scaling_factor: usize,
    pub scaling_factor: f32,
    #[serde(skip)]
    pub origin: PathBuf,
}

impl Default for TinyConfig {
    fn default() -> Self {
        TinyConfig {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            scaling_factor: 1.0,
            origin: PathBuf::from("<TAESD defaults>"),
        }
    }
}

impl TinyConfig {
    /// Read and check a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut config: TinyConfig = read_config(path)?;
        config.origin = path.to_path_buf();
        config.check()?;
        Ok(config)
    }

    /// The block lists fit together and name what is implemented.
    pub fn check(&self) -> Result<()> {
        let origin = &self.origin;
        for (field, channels, blocks) in [
            (
                "encoder_block_out_channels",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder_block_out_channels",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            if channels.is_empty() || channels.len() != blocks.len() {
                return Err(config_error(
                    origin,
                    field,
                    format!(
                        "{} levels, but {} block counts",
                        channels.len(),
                        blocks.len()
                    ),
                ));
            }
            if channels.contains(&0) {
                return Err(config_error(origin, field, "channels must be positive"));
            }
        }
        if self.activation().is_none() {
            return Err(config_error(
                origin,
                "act_fn",
                format!("{:?} is not supported (relu, silu, gelu are)", self.act_fn),
            ));
        }
        if self.upsample_fn != "nearest" || self.upsampling_scaling_factor != 2 {
            return Err(config_error(
                origin,
                "upsample_fn",
                format!(
                    "{} × {} upsampling is not supported (nearest × 2 is)",
                    self.upsample_fn, self.upsampling_scaling_factor
                ),
            ));
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err(config_error(origin, "latent_channels", "must be positive"));
        }
        Ok(())
    }

    fn activation(&self) -> Option<UnaryOp> {
        match self.act_fn.as_str() {
            "relu" => Some(UnaryOp::Relu),
            "silu" | "swish" => Some(UnaryOp::Silu),
            "gelu" => Some(UnaryOp::Gelu),
            _ => None,
        }
    }
}

/// `AutoencoderTinyBlock`: `relu(conv(act(conv(act(conv(x))))) + skip(x))`.
#[derive(Debug)]
struct TinyBlock<B: Backend> {
    conv: [Conv2d<B>; 3],
    /// A 1×1 projection when the channel count changes, else the identity.
    skip: Option<Conv2d<B>>,
    activation: UnaryOp,
}

impl<B: Backend> TinyBlock<B> {
    fn load(b: &B, w: &Weights<'_>, inp: usize, out: usize, activation: UnaryOp) -> Result<Self> {
        let c = w.at("conv");
        // Sequential indices 1 and 3 are the activations.
        let conv = [
            Conv2d::load_same(b, &c.at(0), inp, out, 3)?,
            Conv2d::load_same(b, &c.at(2), out, out, 3)?,
            Conv2d::load_same(b, &c.at(4), out, out, 3)?,
        ];
        let skip = (inp != out)
            .then(|| {
                Conv2d::load_without_bias(b, &w.at("skip"), inp, out, 1, Conv2dParams::same(0))
            })
            .transpose()?;
        Ok(TinyBlock {
            conv,
            skip,
            activation,
        })
    }

    fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut h = self.conv[0].forward(b, x)?;
        for conv in &self.conv[1..] {
            h = conv.forward(b, &b.unary(&h, self.activation)?)?;
        }
        let skip = match &self.skip {
            Some(conv) => conv.forward(b, x)?,
            None => x.clone(),
        };
        b.unary(&b.add(&h, &skip)?, UnaryOp::Relu)
    }
}

/// One entry of an encoder's or decoder's `layers`.
#[derive(Debug)]
enum Layer<B: Backend> {
    Conv(Conv2d<B>),
    Block(TinyBlock<B>),
    Activation(UnaryOp),
    Upsample,
}

impl<B: Backend> Layer<B> {
    fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        match self {
            Layer::Conv(conv) => conv.forward(b, x),
            Layer::Block(block) => block.forward(b, x),
            Layer::Activation(op) => b.unary(x, *op),
            Layer::Upsample => b.upsample_nearest2x(x),
        }
    }
}

/// Layers in `nn.Sequential` order, loaded from `layers.<index>`.
#[derive(Debug)]
struct Sequential<B: Backend> {
    layers: Vec<Layer<B>>,
}

impl<B: Backend> Sequential<B> {
    fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(b, &x)?;
        }
        Ok(x)
    }
}

/// Builds a [`Sequential`], numbering layers as `nn.Sequential` does.
struct Stack<'w, 'a, B: Backend> {
    backend: &'a B,
    weights: Weights<'w>,
    layers: Vec<Layer<B>>,
}

impl<'w, 'a, B: Backend> Stack<'w, 'a, B> {
    fn new(backend: &'a B, weights: &Weights<'w>) -> Self {
        Stack {
            backend,
            weights: weights.clone(),
            layers: Vec::new(),
        }
    }

    fn here(&self) -> Weights<'_> {
        self.weights.at(self.layers.len())
    }

    fn conv(&mut self, inp: usize, out: usize, stride: usize, bias: bool) -> Result<()> {
        let params = Conv2dParams { stride, padding: 1 };
        let w = self.here();
        let conv = if bias {
            Conv2d::load(self.backend, &w, inp, out, 3, params)?
        } else {
            Conv2d::load_without_bias(self.backend, &w, inp, out, 3, params)?
        };
        self.layers.push(Layer::Conv(conv));
        Ok(())
    }

    fn blocks(&mut self, count: usize, channels: usize, activation: UnaryOp) -> Result<()> {
        for _ in 0..count {
            let block =
                TinyBlock::load(self.backend, &self.here(), channels, channels, activation)?;
            self.layers.push(Layer::Block(block));
        }
        Ok(())
    }

    fn finish(self) -> Sequential<B> {
        Sequential {
            layers: self.layers,
        }
    }
}

/// diffusers' `AutoencoderTiny` (TAESD).
#[derive(Debug)]
pub struct AutoencoderTiny<B: Backend> {
    config: TinyConfig,
    encoder: Option<Sequential<B>>,
    decoder: Sequential<B>,
}

impl<B: Backend> AutoencoderTiny<B> {
    /// Build from the weights of `store`'s VAE component (`encoder.layers.…`,
    /// `decoder.layers.…`). A file with only a decoder (`taesd_decoder`) gives a decode-only
    /// codec whose [`encode`](LatentCodec::encode) is an error.
    pub fn from_weights(backend: &B, weights: &Weights<'_>, config: TinyConfig) -> Result<Self> {
        config.check()?;
        let activation = config.activation().unwrap_or(UnaryOp::Relu);
        let encoder = weights
            .contains("encoder.layers.0.weight")
            .then(|| {
                Self::load_encoder(backend, &weights.at("encoder.layers"), &config, activation)
            })
            .transpose()?;
        let decoder =
            Self::load_decoder(backend, &weights.at("decoder.layers"), &config, activation)?;
        Ok(AutoencoderTiny {
            config,
            encoder,
            decoder,
        })
    }

    /// Load TAESD from a diffusers `AutoencoderTiny` folder (`config.json` + weights) or a
    /// `.safetensors` file in that layout (SD 1.x TAESD's config; a `config.json` beside the
    /// file is used when there).
    pub fn load(backend: &B, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (config_dir, files) = if path.is_dir() {
            (path.to_path_buf(), component_files(path)?)
        } else {
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (dir, vec![path.to_path_buf()])
        };
        let config_path = config_dir.join("config.json");
        let config = if config_path.is_file() {
            TinyConfig::from_file(&config_path)?
        } else {
            TinyConfig::default()
        };
        let store = WeightStore::open_component_files(Component::Vae, &files)?;
        Self::from_weights(backend, &store.vae()?, config)
    }

    fn load_encoder(
        b: &B,
        w: &Weights<'_>,
        config: &TinyConfig,
        activation: UnaryOp,
    ) -> Result<Sequential<B>> {
        let mut stack = Stack::new(b, w);
        let channels = &config.encoder_block_out_channels;
        for (level, (&ch, &count)) in channels.iter().zip(&config.num_encoder_blocks).enumerate() {
            if level == 0 {
                stack.conv(config.in_channels, ch, 1, true)?;
            } else {
                // diffusers' stride-2 convolution keeps the level's channel count.
                stack.conv(ch, ch, 2, false)?;
            }
            stack.blocks(count, ch, activation)?;
        }
        let last = channels[channels.len() - 1];
        stack.conv(last, config.latent_channels, 1, true)?;
        Ok(stack.finish())
    }

    fn load_decoder(
        b: &B,
        w: &Weights<'_>,
        config: &TinyConfig,
        activation: UnaryOp,
    ) -> Result<Sequential<B>> {
        let mut stack = Stack::new(b, w);
        let channels = &config.decoder_block_out_channels;
        stack.conv(config.latent_channels, channels[0], 1, true)?;
        stack.layers.push(Layer::Activation(activation));
        let levels = channels.len();
        for (level, (&ch, &count)) in channels.iter().zip(&config.num_decoder_blocks).enumerate() {
            let last = level + 1 == levels;
            stack.blocks(count, ch, activation)?;
            if !last {
                stack.layers.push(Layer::Upsample);
            }
            let out = if last { config.out_channels } else { ch };
            stack.conv(ch, out, 1, last)?;
        }
        Ok(stack.finish())
    }

    pub fn config(&self) -> &TinyConfig {
        &self.config
    }

    /// Whether the weights had an encoder.
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// `image [n, 3, h, w]` in `[-1, 1]` → latents `[n, c, h/f, w/f]` in the UNet's scale
    /// (`AutoencoderTiny.encode(x).latents`).
    pub fn encode_latents(&self, b: &B, image: &B::Tensor) -> Result<B::Tensor> {
        let encoder = self.encoder.as_ref().ok_or_else(|| {
            sd_core::Error::invalid_argument(
                "TAESD",
                format!(
                    "{}: these weights have no encoder (a decoder-only file)",
                    self.config.origin.display()
                ),
            )
        })?;
        encoder.forward(b, &b.affine(image, 0.5, 0.5)?)
    }

    /// Latents in the UNet's scale `[n, c, h, w]` → image `[n, 3, h·f, w·f]` in about `[-1, 1]`
    /// (`AutoencoderTiny.decode(z).sample`).
    pub fn decode_latents(&self, b: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        let clamped = b.scale(&b.unary(&b.scale(latents, 1.0 / 3.0)?, UnaryOp::Tanh)?, 3.0)?;
        let image = self.decoder.forward(b, &clamped)?;
        b.affine(&image, 2.0, -1.0)
    }

    fn downscale(&self) -> usize {
        1 << (self.config.decoder_block_out_channels.len() - 1)
    }
}

impl<B: Backend> LatentCodec<B> for AutoencoderTiny<B> {
    /// TAESD's latents as a (near) point mass: mean = the latents, log-variance at diffusers'
    /// lower clamp (σ ≈ 3e-7). diffusers' pipelines take TAESD latents as they are, without a
    /// draw; a pipeline that samples this distribution draws noise diffusers does not.
    fn encode(&self, backend: &B, image: &B::Tensor) -> Result<LatentDist<B::Tensor>> {
        let mean = self.encode_latents(backend, image)?;
        let host = backend.download(&mean)?;
        let logvar = host.mapv(|_| sd_core::latent_dist::LOGVAR_RANGE.0);
        Ok(LatentDist {
            mean,
            logvar: backend.upload(&logvar)?,
        })
    }

    fn decode(&self, backend: &B, latents: &B::Tensor) -> Result<B::Tensor> {
        self.decode_latents(backend, latents)
    }

    fn scaling_factor(&self) -> f32 {
        self.config.scaling_factor
    }

    fn downscale_factor(&self) -> usize {
        self.downscale()
    }

    fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }
}
