//! The one thread that runs generations, in arrival order, from a bounded queue. It owns the
//! loaded model (and its variant with the current LoRA set), so switching models or LoRAs is
//! ordered with the generations around it, as A1111's queue lock orders them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sd_core::pipeline::{Control, RgbImage};
use sd_core::{Backend, Error, Result};
use tokio::sync::{mpsc, oneshot};

use super::catalog::Checkpoint;
use super::error::ApiError;
use super::plan::Plan;
use super::state::{Metrics, Progress};
use crate::lora::LoraSpec;
use crate::model_hash::{lora_hash, short_of_sha256};
use crate::parameters::Parameters;
use crate::{LoadOptions, StableDiffusion};

/// Makes a backend for each model built (CPU, or a CUDA device).
pub type BackendFactory<B> = Arc<dyn Fn() -> Result<B> + Send + Sync>;

/// What the worker is asked to do.
#[derive(Debug)]
pub enum Work {
    /// Generate on `checkpoint` (already resolved from the catalog).
    Generate {
        plan: Box<Plan>,
        checkpoint: Checkpoint,
        job: &'static str,
    },
    /// Load `checkpoint` (POST options `sd_model_checkpoint`).
    Load(Checkpoint),
}

/// A generation's result: the images and what the answer says about them.
#[derive(Debug)]
pub struct Finished {
    pub images: Vec<RgbImage>,
    /// The `parameters` text of each image.
    pub infotexts: Vec<String>,
    pub seeds: Vec<u64>,
    pub sampler_name: String,
    pub clip_skip: usize,
    pub model_name: String,
    pub model_hash: String,
    pub job_timestamp: String,
}

pub type Reply = oneshot::Sender<std::result::Result<Option<Finished>, ApiError>>;

#[derive(Debug)]
pub struct Job {
    pub work: Work,
    pub reply: Reply,
}

/// The model in memory.
struct Loaded<B: Backend> {
    checkpoint: Checkpoint,
    model: StableDiffusion<B>,
    short_hash: String,
    /// The same checkpoint with the last LoRA set a request asked for.
    with_loras: Option<(Vec<LoraSpec>, StableDiffusion<B>)>,
}

pub struct Worker<B: Backend> {
    make_backend: BackendFactory<B>,
    config_dir: Option<PathBuf>,
    embedding_dir: Option<PathBuf>,
    loaded: Option<Loaded<B>>,
    lora_hashes: HashMap<PathBuf, String>,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
}

/// The SHA-256 of the loaded models (for `GET sd-models` and `GET options`), shared with the
/// handlers.
pub type LoadedHash = Arc<super::hashes::ModelHashes>;

impl<B: Backend> Worker<B> {
    pub fn new(
        make_backend: BackendFactory<B>,
        config_dir: Option<PathBuf>,
        embedding_dir: Option<PathBuf>,
        progress: Arc<Progress>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            make_backend,
            config_dir,
            embedding_dir,
            loaded: None,
            lora_hashes: HashMap::new(),
            progress,
            metrics,
        }
    }

    /// Load `checkpoint` unless it is the one in memory; its SHA-256 goes to `loaded_hash`.
    pub fn load(&mut self, checkpoint: &Checkpoint, loaded_hash: &LoadedHash) -> Result<()> {
        if self
            .loaded
            .as_ref()
            .is_some_and(|l| &l.checkpoint == checkpoint)
        {
            return Ok(());
        }
        // Free the old model first: two SD models at once may not fit.
        self.loaded = None;
        let options = LoadOptions {
            config_dir: self.config_dir.clone(),
            low_memory: false,
            embedding_dirs: self.embedding_dir.iter().cloned().collect(),
            ..LoadOptions::default()
        };
        let started = Instant::now();
        let model = StableDiffusion::load_on((self.make_backend)()?, &checkpoint.path, options)?;
        let sha256 = loaded_hash.loaded_model(&checkpoint.title, model.weight_files())?;
        let hash = short_of_sha256(&sha256).to_string();
        log_event(&format!(
            r#""event":"model_loaded","title":{},"hash":"{hash}","seconds":{:.3}"#,
            serde_json::Value::from(checkpoint.title.as_str()),
            started.elapsed().as_secs_f64()
        ));
        self.loaded = Some(Loaded {
            checkpoint: checkpoint.clone(),
            model,
            short_hash: hash,
            with_loras: None,
        });
        Ok(())
    }

    /// Run jobs until every sender is gone (the server stopped); the running and queued jobs
    /// finish first.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>, loaded_hash: LoadedHash) {
        while let Some(job) = jobs.blocking_recv() {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            if job.reply.is_closed() {
                // The client left while the job waited.
                self.metrics.jobs_abandoned.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.metrics.busy.store(true, Ordering::Relaxed);
            let outcome = match job.work {
                Work::Load(checkpoint) => self
                    .load(&checkpoint, &loaded_hash)
                    .map(|()| None)
                    .map_err(ApiError::from),
                Work::Generate {
                    plan,
                    checkpoint,
                    job: name,
                } => self
                    .load(&checkpoint, &loaded_hash)
                    .map_err(ApiError::from)
                    .and_then(|()| self.generate(&plan, name, &job.reply).map(Some)),
            };
            self.metrics.busy.store(false, Ordering::Relaxed);
            self.progress.end();
            match &outcome {
                Ok(_) => self.metrics.jobs_ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.metrics.jobs_failed.fetch_add(1, Ordering::Relaxed),
            };
            // The client may have gone meanwhile: nothing left to tell.
            let _ = job.reply.send(outcome);
        }
    }

    fn generate(
        &mut self,
        plan: &Plan,
        job: &str,
        reply: &Reply,
    ) -> std::result::Result<Finished, ApiError> {
        let loras: Vec<LoraSpec> = plan.loras.iter().map(|(_, spec)| spec.clone()).collect();
        let mut lora_hashes = Vec::new();
        for (name, spec) in &plan.loras {
            let hash = match self.lora_hashes.get(&spec.path) {
                Some(hash) => hash.clone(),
                None => {
                    let hash = lora_hash(&spec.path)?;
                    self.lora_hashes.insert(spec.path.clone(), hash.clone());
                    hash
                }
            };
            lora_hashes.push((name.clone(), hash));
        }
        let make_backend = Arc::clone(&self.make_backend);
        let loaded = self
            .loaded
            .as_mut()
            .ok_or_else(|| ApiError::internal("no model loaded"))?;
        let model = if loras.is_empty() {
            &loaded.model
        } else {
            if loaded
                .with_loras
                .as_ref()
                .is_none_or(|(set, _)| set != &loras)
            {
                loaded.with_loras = None;
                let variant = loaded.model.with_loras(make_backend()?, &loras)?;
                loaded.with_loras = Some((loras.clone(), variant));
            }
            match &loaded.with_loras {
                Some((_, variant)) => variant,
                None => &loaded.model,
            }
        };

        let timestamp = self.progress.begin(job, plan.iterations.len());
        let mut finished = Finished {
            images: Vec::new(),
            infotexts: Vec::new(),
            seeds: Vec::new(),
            sampler_name: String::new(),
            clip_skip: 1,
            model_name: loaded.checkpoint.model_name.clone(),
            model_hash: loaded.short_hash.clone(),
            job_timestamp: timestamp,
        };
        for (job_no, request) in plan.iterations.iter().enumerate() {
            if self.progress.interrupted() {
                break;
            }
            self.progress.begin_iteration(job_no, request.steps);
            let started = Instant::now();
            let mut last_step = Instant::now();
            let (progress, metrics) = (&self.progress, &self.metrics);
            let generation = model.generate_with_progress(request, |step| {
                metrics.steps.fetch_add(1, Ordering::Relaxed);
                let micros = last_step.elapsed().as_micros() as u64;
                metrics.step_micros.fetch_add(micros, Ordering::Relaxed);
                last_step = Instant::now();
                progress.step(step.step, step.total, step.latents);
                if reply.is_closed() {
                    Control::Cancel
                } else if progress.interrupted() || progress.take_skip() {
                    Control::Finish
                } else {
                    Control::Continue
                }
            });
            let generation = match generation {
                Ok(generation) => generation,
                Err(Error::Cancelled { .. }) => {
                    self.metrics.jobs_abandoned.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::internal("the client disconnected"));
                }
                Err(e) => return Err(e.into()),
            };
            if !generation.decoded_in_f32.is_empty() {
                log_event(&format!(
                    r#""event":"decoded_in_f32","images":{:?},"reason":"non-finite pixels in reduced precision""#,
                    generation.decoded_in_f32
                ));
            }
            let micros = started.elapsed().as_micros() as u64;
            self.metrics
                .image_micros
                .fetch_add(micros, Ordering::Relaxed);
            finished.sampler_name = model.scheduler_for(request).to_string();
            finished.clip_skip = model.clip_skip_for(request);
            let ti_hashes = model.embedding_hashes(request)?;
            // A1111's infotext names: `Sampler: DPM++ 2M` + `Schedule type: Karras`, PLMS, ….
            let schedule_type = request
                .sampler
                .schedule_type
                .as_deref()
                .map(crate::schedulers::ScheduleType::parse)
                .transpose()?;
            let (infotext_sampler, infotext_schedule) =
                crate::schedulers::infotext_names(&finished.sampler_name, schedule_type)?;
            let safety_flags = generation.safety_flags.clone();
            let images = generation.images.into_iter().zip(generation.seeds);
            for (index, (image, seed)) in images.enumerate() {
                let parameters = Parameters {
                    prompt: plan.prompt.clone(),
                    negative_prompt: plan.negative_prompt.clone(),
                    steps: plan.steps,
                    sampler: infotext_sampler.clone(),
                    schedule_type: infotext_schedule.map(str::to_string),
                    cfg_scale: plan.cfg_scale,
                    seed,
                    width: image.width(),
                    height: image.height(),
                    model_hash: Some(finished.model_hash.clone()),
                    model: Some(finished.model_name.clone()),
                    clip_skip: finished.clip_skip,
                    denoising_strength: plan.denoising_strength,
                    hires: request.hires.clone(),
                    lora_hashes: lora_hashes.clone(),
                    ti_hashes: ti_hashes.clone(),
                    rng: Some(request.rng.a1111_name().to_string()),
                    unet_weights: model.unet_weights(),
                    vae: None,
                    safety_flagged: safety_flags.as_ref().map(|flags| flags[index]),
                };
                finished.infotexts.push(parameters.to_text());
                finished.images.push(image);
                finished.seeds.push(seed);
                self.metrics.images.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.progress.interrupted() {
            self.metrics
                .jobs_interrupted
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(finished)
    }
}

/// One structured log line on stderr: a JSON object with the time and `fields`.
pub fn log_event(fields: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    eprintln!(r#"{{"time":{now:.3},{fields}}}"#);
}
