//! [`StableDiffusion`]: a loaded SD 1.x model, ready to generate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sd_clip::{
    ClipTextEncoder, ClipTextTransformer, PromptEmbeddings, PromptMode, TextualInversion,
};
use sd_core::cpu::CpuBackend;
use sd_core::on_demand::OnDemand;
use sd_core::pipeline::{Control, Generation, GenerationRequest, Pipeline, StepProgress};
use sd_core::weights::diffusers::component_files;
use sd_core::weights::{
    Component, LdmLayout, UnetLayout, UnetWeights, VaeLayout, Variant, WeightStore,
};
use sd_core::{Backend, Error, Result, Scheduler};
use sd_schedulers::{
    SamplerOptions, ScheduleType, SchedulerConfig, scheduler_from_name, scheduler_from_name_with,
};
use sd_unet::UNet2DConditionModel;
use sd_vae::{AutoencoderKL, AutoencoderTiny};

use crate::codec::SdCodec;
use crate::configs::ModelConfigs;
use crate::lora::{LoraOverlay, LoraReport, LoraSpec};
use crate::safety::{CheckerSlot, SafetyCheckerChoice};

/// The concrete pipeline: CLIP, the UNet and the VAE on backend `B` (the UNet and the VAE
/// held resident, or only while used: [`LoadOptions::low_memory`]; the final decode perhaps
/// TAESD's: [`LoadOptions::taesd_decoder`]).
pub type SdPipeline<B> =
    Pipeline<B, ClipTextEncoder<B>, OnDemand<B, UNet2DConditionModel<B>>, SdCodec<B>>;

/// The sampler of SD 1.5's own scheduler config (diffusers' default for it).
pub const DEFAULT_SCHEDULER: &str = "PNDMScheduler";

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Take the component configs and tokenizer from this diffusers folder instead of SD 1.5's
    /// built-in ones when loading a single file (diffusers' `from_single_file(config=...)`):
    /// for single files of other shapes than SD 1.5, such as the tiny test models.
    pub config_dir: Option<PathBuf>,
    /// Hold the UNet's and the VAE's weights only while a generation uses them (the UNet
    /// during the steps, the VAE to encode and decode), rebuilding them from the checkpoint for
    /// the next generation: the peak memory is then one model's weights, not their sum, at the
    /// cost of a rebuild per generation. For one-shot runs (`sd generate` uses it).
    pub low_memory: bool,
    /// LoRA files merged into the weights (in f32, before any packing or upload); the
    /// low-memory rebuild applies them again by itself.
    pub loras: Vec<LoraSpec>,
    /// Which UNet weights a full checkpoint (trained weights plus `model_ema.*` copies) gives:
    /// the non-EMA ones by default, as diffusers' `from_single_file` and A1111 load it
    /// (see [`UnetWeights`]).
    pub unet_weights: UnetWeights,
    /// Textual-inversion embedding files ([`crate::embeddings`]); a file that cannot be read or
    /// does not fit the model fails the load.
    pub embeddings: Vec<PathBuf>,
    /// Folders of embedding files ([`crate::embeddings::load_dir`]); their unreadable or
    /// ill-fitting files are skipped and listed in [`StableDiffusion::skipped_embeddings`].
    pub embedding_dirs: Vec<PathBuf>,
    /// The safety checker: the model's own by default (diffusers folders that ship one).
    pub safety_checker: SafetyCheckerChoice,
    /// Decode final images with this TAESD (`AutoencoderTiny` folder or `.safetensors` file)
    /// instead of the VAE, which still encodes init images.
    pub taesd_decoder: Option<PathBuf>,
    /// Replace the checkpoint's VAE by this one (A1111's `--vae`): a standalone `.safetensors`
    /// in LDM names (`vae-ft-mse-840000-ema-pruned`) or diffusers names, or a diffusers `vae/`
    /// folder. Its tensors must have the shapes of the model's VAE config.
    pub vae: Option<PathBuf>,
}

impl LoadOptions {
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_dir = Some(dir.into());
        self
    }

    pub fn low_memory(mut self, low_memory: bool) -> Self {
        self.low_memory = low_memory;
        self
    }

    /// Read the EMA copies of a full checkpoint's UNet (diffusers' `extract_ema=True`).
    pub fn ema(mut self, ema: bool) -> Self {
        self.unet_weights = if ema {
            UnetWeights::Ema
        } else {
            UnetWeights::NonEma
        };
        self
    }

    /// Add a LoRA file (see [`crate::lora`]).
    pub fn lora(mut self, spec: LoraSpec) -> Self {
        self.loras.push(spec);
        self
    }

    /// Add a textual-inversion embedding file (see [`crate::embeddings`]).
    pub fn embedding(mut self, path: impl Into<PathBuf>) -> Self {
        self.embeddings.push(path.into());
        self
    }

    /// Add a folder of embedding files (see [`crate::embeddings::load_dir`]).
    pub fn embedding_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.embedding_dirs.push(dir.into());
        self
    }

    /// Choose the safety checker (see [`SafetyCheckerChoice`]).
    pub fn safety_checker(mut self, choice: SafetyCheckerChoice) -> Self {
        self.safety_checker = choice;
        self
    }
}

/// An SD 1.x model on a backend. Everything that varies per image (sampler, clip skip, prompt
/// mode, seeds) travels on the [`GenerationRequest`], so one loaded model serves many requests:
/// `StableDiffusion<CpuBackend>` is `Send + Sync`, and `generate` takes `&self`.
///
/// ```no_run
/// use std::sync::Arc;
/// use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
/// # fn main() -> stable_diffusion::Result<()> {
/// let sd = Arc::new(StableDiffusion::load("v1-5-pruned-emaonly.safetensors", LoadOptions::default())?);
/// let request = GenerationRequest::new("a red fox in the snow").scheduler("DPM++ 2M Karras");
/// let out = sd.generate(&request.steps(25).seed(42))?;
/// # let _ = out; Ok(()) }
/// ```
#[derive(Debug)]
pub struct StableDiffusion<B: Backend> {
    pipeline: SdPipeline<B>,
    scheduler_config: SchedulerConfig,
    /// The sampler of requests that name none.
    default_scheduler: String,
    source: PathBuf,
    weight_files: Vec<PathBuf>,
    /// The UNet weight set read from a full checkpoint (`None`: the file had one set).
    unet_weights: Option<UnetWeights>,
    /// Held by the generation that is running (see `generate_with_progress`).
    turn: Mutex<()>,
    /// What the LoRA files of [`LoadOptions::loras`] matched.
    lora_report: LoraReport,
    /// What the model was built from, to build it again with other LoRAs.
    origin: Option<Origin>,
    /// Embedding files of [`LoadOptions::embedding_dirs`] that were not loaded, with why.
    skipped_embeddings: Vec<(PathBuf, Error)>,
    /// Run on every generation's images when present.
    safety_checker: Option<CheckerSlot<B>>,
}

/// A loaded checkpoint before any LoRA, with what building a model from it takes.
#[derive(Debug, Clone)]
struct Origin {
    store: Arc<WeightStore>,
    configs: ModelConfigs,
    /// The UNet's LDM numbering, for LoRA files that use LDM names.
    unet_layout: UnetLayout,
    low_memory: bool,
    safety_checker: SafetyCheckerChoice,
    taesd_decoder: Option<PathBuf>,
    vae: Option<PathBuf>,
}

impl Origin {
    fn build<B: Backend>(&self, backend: B, loras: &[LoraSpec]) -> Result<StableDiffusion<B>> {
        let mut store = Arc::clone(&self.store);
        let mut lora_report = LoraReport::default();
        if !loras.is_empty() {
            let (overlay, report) = LoraOverlay::load(&store, &self.unet_layout, loras)?;
            store = Arc::new(overlay.apply_to(&store));
            lora_report = report;
        }
        let options = LoadOptions::default()
            .low_memory(self.low_memory)
            .safety_checker(self.safety_checker.clone());
        let options = LoadOptions {
            taesd_decoder: self.taesd_decoder.clone(),
            vae: self.vae.clone(),
            ..options
        };
        let mut model =
            StableDiffusion::from_store(backend, store, self.configs.clone(), &options)?;
        model.lora_report = lora_report;
        model.origin = Some(self.clone());
        Ok(model)
    }
}

/// The store of a `--vae` override: a diffusers `vae/` folder or one safetensors file (LDM or
/// diffusers names), renamed for a VAE shaped as `config`.
fn open_vae(path: &Path, config: &sd_vae::VaeConfig) -> Result<WeightStore> {
    if path.is_dir() {
        return WeightStore::open_component_files(Component::Vae, &component_files(path)?);
    }
    let layout = VaeLayout {
        levels: config.levels(),
        layers_per_block: config.layers_per_block,
    };
    WeightStore::open_vae_file(path, &layout)
}

impl StableDiffusion<CpuBackend> {
    /// Load a diffusers folder (`model_index.json`) or an LDM single-file `.safetensors` onto the
    /// CPU backend.
    pub fn load(path: impl AsRef<Path>, options: LoadOptions) -> Result<Self> {
        Self::load_on(CpuBackend::new(), path, options)
    }
}

impl<B: Backend> StableDiffusion<B> {
    /// [`load`](StableDiffusion::load) onto `backend`.
    pub fn load_on(backend: B, path: impl AsRef<Path>, options: LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        if let (true, Some(dir)) = (path.is_dir(), &options.config_dir) {
            return Err(Error::invalid_argument(
                "config_dir",
                format!(
                    "{}: configs are read from a diffusers folder's own files; config_dir is for \
                     single files, and {} is a folder",
                    dir.display(),
                    path.display()
                ),
            ));
        }
        let store = WeightStore::open_with(path, options.unet_weights)?;
        let config_dir = if path.is_dir() {
            Some(path)
        } else {
            options.config_dir.as_deref()
        };
        let configs = match config_dir {
            Some(dir) => ModelConfigs::from_folder(dir)?,
            None => ModelConfigs::sd15(store.variant().unwrap_or(Variant::Standard))?,
        };
        let unet_layout = match config_dir {
            Some(dir) => UnetLayout::from_config_file(dir.join("unet").join("config.json"))?,
            None => LdmLayout::sd15().unet,
        };
        let origin = Origin {
            store: Arc::new(store),
            configs,
            unet_layout,
            low_memory: options.low_memory,
            safety_checker: options.safety_checker.clone(),
            taesd_decoder: options.taesd_decoder.clone(),
            vae: options.vae.clone(),
        };
        let mut model = origin
            .build(backend, &options.loras)
            .map_err(|error| with_config_hint(error, path, config_dir.is_none()))?;
        let text = model.pipeline.text_encoder();
        let found = crate::embeddings::gather(
            &options.embeddings,
            &options.embedding_dirs,
            text.model().hidden_size(),
        )?;
        text.set_embeddings(found.loaded)?;
        model.skipped_embeddings = found.skipped;
        Ok(model)
    }

    /// The same checkpoint with another set of LoRA files (none: the bare model), on `backend`.
    /// The checkpoint is not opened again (its mapped files are shared); the models are rebuilt
    /// from it with the new deltas merged. For a model made with
    /// [`from_pipeline`](Self::from_pipeline), which has no checkpoint to rebuild from, an error.
    /// The embeddings carry over.
    pub fn with_loras(&self, backend: B, loras: &[LoraSpec]) -> Result<Self> {
        let origin = self.origin.as_ref().ok_or_else(|| {
            Error::invalid_argument(
                "loras",
                "this model was assembled from parts (from_pipeline); load it from a checkpoint",
            )
        })?;
        let model = origin.build(backend, loras)?;
        model
            .pipeline
            .text_encoder()
            .set_prepared_embeddings(self.embeddings());
        Ok(model)
    }

    /// Build from a weight store and the configs of its components (`options.low_memory`
    /// decides whether the UNet and VAE stay resident; the store is kept to rebuild them).
    /// LoRA files are applied by [`load_on`](Self::load_on) and [`with_loras`](Self::with_loras),
    /// which know the UNet's LDM numbering; here they are refused rather than ignored (a
    /// `LoraOverlay` put on the store itself works).
    pub fn from_store(
        backend: B,
        store: Arc<WeightStore>,
        configs: ModelConfigs,
        options: &LoadOptions,
    ) -> Result<Self> {
        if let Some(path) = options
            .embeddings
            .first()
            .or(options.embedding_dirs.first())
        {
            return Err(Error::invalid_argument(
                "embeddings",
                format!(
                    "{}: from_store does not read embedding files; load with load_on, or use \
                     set_embeddings",
                    path.display()
                ),
            ));
        }
        if let Some(lora) = options.loras.first() {
            return Err(Error::invalid_argument(
                "loras",
                format!(
                    "{}: from_store does not apply LoRA files; load with load_on, or use \
                     with_loras",
                    lora.path.display()
                ),
            ));
        }
        let side = configs.default_image_side();
        let resident = !options.low_memory;
        let text_model =
            ClipTextTransformer::load(&backend, &store.text_encoder()?, configs.text_encoder)?;
        let (unet_store, unet_config) = (Arc::clone(&store), configs.unet);
        let unet = OnDemand::denoiser(
            &backend,
            Box::new(move |b: &B| {
                UNet2DConditionModel::from_store(b, unet_config.clone(), &unet_store)
            }),
            resident,
        )?;
        let vae_store = match &options.vae {
            Some(path) => Arc::new(open_vae(path, &configs.vae)?),
            None => Arc::clone(&store),
        };
        let vae_config = configs.vae;
        let vae = OnDemand::codec(
            &backend,
            Box::new(move |b: &B| AutoencoderKL::from_store(b, vae_config.clone(), &vae_store)),
            resident,
        )?;
        let mut codec = SdCodec::new(vae);
        if let Some(path) = &options.taesd_decoder {
            codec = codec.with_taesd_decoder(AutoencoderTiny::load(&backend, path)?, path)?;
        }
        let safety_checker = options
            .safety_checker
            .resolve(store.origin())
            .map(|path| CheckerSlot::load(&backend, path, resident))
            .transpose()?;
        let text = ClipTextEncoder::new(text_model, configs.tokenizer);
        let pipeline = Pipeline::new(backend, text, unet, codec).with_default_size(side, side);
        let mut model =
            Self::from_pipeline(pipeline, configs.scheduler, store.origin().to_path_buf());
        model.weight_files = store.files().map(Path::to_path_buf).collect();
        model.unet_weights = store.unet_weights();
        model.safety_checker = safety_checker;
        Ok(model)
    }

    /// Wrap an assembled pipeline. The sampler starts as the scheduler config's own class (as
    /// in diffusers), or PNDM when the config names a class we do not implement.
    pub fn from_pipeline(
        pipeline: SdPipeline<B>,
        scheduler_config: SchedulerConfig,
        source: PathBuf,
    ) -> Self {
        let default_scheduler = scheduler_config
            .class_name
            .clone()
            .filter(|name| scheduler_from_name(name, &scheduler_config).is_ok())
            .unwrap_or_else(|| DEFAULT_SCHEDULER.to_string());
        Self {
            pipeline,
            scheduler_config,
            default_scheduler,
            source,
            weight_files: Vec::new(),
            unet_weights: None,
            turn: Mutex::new(()),
            lora_report: LoraReport::default(),
            origin: None,
            skipped_embeddings: Vec::new(),
            safety_checker: None,
        }
    }

    /// The sampler of requests that name none: the scheduler config's own class (as in
    /// diffusers), or PNDM when the config names a class we do not implement.
    pub fn default_scheduler(&self) -> &str {
        &self.default_scheduler
    }

    /// The sampler `request` runs with: its own, else [`default_scheduler`](Self::default_scheduler).
    pub fn scheduler_for<'a>(&'a self, request: &'a GenerationRequest) -> &'a str {
        request
            .sampler
            .name
            .as_deref()
            .map_or(self.default_scheduler.as_str(), str::trim)
    }

    /// The clip skip `request` runs with (its own, else the text encoder's default, 1).
    pub fn clip_skip_for(&self, request: &GenerationRequest) -> usize {
        request
            .text
            .clip_skip
            .unwrap_or_else(|| self.pipeline.text_encoder().clip_skip())
    }

    /// The prompt mode `request` runs with (its own, else the text encoder's default, A1111).
    pub fn prompt_mode_for(&self, request: &GenerationRequest) -> PromptMode {
        request
            .text
            .prompt_mode
            .unwrap_or_else(|| self.pipeline.text_encoder().mode())
    }

    /// The textual-inversion embeddings prompts may use (names, vector counts, files).
    pub fn embeddings(&self) -> Arc<PromptEmbeddings> {
        self.pipeline.text_encoder().embeddings()
    }

    /// Replace the embeddings prompts may use (for generations that start afterwards; one
    /// running keeps its set). Each must fit the text encoder; on error nothing changes.
    pub fn set_embeddings(&self, embeddings: Vec<TextualInversion>) -> Result<()> {
        self.pipeline.text_encoder().set_embeddings(embeddings)
    }

    /// Files of [`LoadOptions::embedding_dirs`] that were not loaded, each with its error.
    pub fn skipped_embeddings(&self) -> &[(PathBuf, Error)] {
        &self.skipped_embeddings
    }

    /// The embeddings `request`'s prompt and negative prompt use (each once, prompt first): what
    /// A1111 lists as `TI hashes`.
    pub fn embeddings_used(
        &self,
        request: &GenerationRequest,
    ) -> Result<Vec<Arc<TextualInversion>>> {
        let prompts = [request.prompt.as_str(), request.negative_prompt.as_str()];
        self.pipeline
            .text_encoder()
            .embeddings_used(&prompts, &request.text)
    }

    /// A1111's `TI hashes` for `request`: each embedding its prompts use that came from a file,
    /// by name and short hash ([`crate::model_hash::embedding_hash`]).
    pub fn embedding_hashes(&self, request: &GenerationRequest) -> Result<Vec<(String, String)>> {
        self.embeddings_used(request)?
            .iter()
            .filter_map(|e| Some((e.name().to_string(), e.source()?)))
            .map(|(name, path)| Ok((name, crate::model_hash::embedding_hash(path)?)))
            .collect()
    }

    /// What the LoRA files given at load matched: modules applied and keys skipped, per file.
    pub fn lora_report(&self) -> &LoraReport {
        &self.lora_report
    }

    /// Which UNet weights of a full checkpoint (one with EMA copies) were loaded; `None` when
    /// the checkpoint has a single set.
    pub fn unet_weights(&self) -> Option<UnetWeights> {
        self.unet_weights
    }

    /// The scheduler config the model was loaded with (its `_class_name` may name a class
    /// [`default_scheduler`](Self::default_scheduler) had to replace).
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    /// Whether generations are checked by a safety checker.
    pub fn has_safety_checker(&self) -> bool {
        self.safety_checker.is_some()
    }

    /// The folder or file the weights came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The safetensors files the weights were read from (empty for a pipeline built in memory).
    pub fn weight_files(&self) -> &[PathBuf] {
        &self.weight_files
    }

    pub fn pipeline(&self) -> &SdPipeline<B> {
        &self.pipeline
    }

    /// Whether the UNet is an inpainting one (9 input channels).
    pub fn is_inpainting(&self) -> bool {
        self.pipeline.is_inpainting()
    }

    pub fn generate(&self, request: &GenerationRequest) -> Result<Generation> {
        self.generate_with_progress(request, |_| Control::Continue)
    }

    /// Generate, calling `on_step` after every model evaluation (return
    /// [`Control::Cancel`] to stop with [`Error::Cancelled`](crate::Error::Cancelled)). With a
    /// safety checker, flagged images come back black and `safety_flags` says which.
    /// Concurrent calls from several threads run one after the other; `on_step` must not start
    /// another generation on the same model (it would wait for itself).
    pub fn generate_with_progress(
        &self,
        request: &GenerationRequest,
        mut on_step: impl FnMut(&StepProgress<'_>) -> Control,
    ) -> Result<Generation> {
        let name = self.scheduler_for(request);
        let schedule_type = match request.sampler.schedule_type.as_deref() {
            Some(text) => Some(ScheduleType::parse(text)?),
            None => None,
        };
        let options = SamplerOptions {
            eta: request.sampler.eta,
            karras_sigmas: request.sampler.karras_sigmas,
            schedule_type,
        };
        let scheduler_config = self
            .scheduler_config
            .with_overrides(&request.sampler.config_overrides)?;
        let new_scheduler = || -> Result<Box<dyn Scheduler>> {
            scheduler_from_name_with(name, &scheduler_config, options)
        };
        // One generation at a time: each already uses every core, and two at once would hold
        // two sets of activations (and fight over low-memory rebuilds) for no gain in speed.
        // A panic in another generation leaves nothing half-done behind the lock.
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut generation =
            self.pipeline
                .generate_with_progress(request, &new_scheduler, &mut on_step)?;
        if let Some(checker) = &self.safety_checker {
            let flags = checker.filter(self.pipeline.backend(), &mut generation.images)?;
            generation.safety_flags = Some(flags);
        }
        Ok(generation)
    }
}

/// A single file loaded with SD 1.5's built-in configs whose tensors do not fit them is most
/// likely another shape of model: say to give its configs, not only which tensor differs.
fn with_config_hint(error: Error, path: &Path, built_in_configs: bool) -> Error {
    match error {
        Error::TensorShape { .. } | Error::MissingTensor { .. } if built_in_configs => {
            Error::UnsupportedModel {
                path: path.to_path_buf(),
                reason: format!(
                    "its weights do not fit SD 1.5's built-in configs ({error}); if it is another \
                     shape of SD 1.x model, give the diffusers folder with its configs \
                     (LoadOptions::config_dir, sd generate --config-dir DIR)"
                ),
            }
        }
        error => error,
    }
}
