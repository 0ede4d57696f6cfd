//! The routes: A1111's `/sdapi/v1/…`, its `/internal/ping`, a readiness answer for load
//! balancers and `/metrics` for Prometheus.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::a1111::{
    GenerateBody, Info, parse_body, parse_infotext, samplers_json, schedulers_json,
};
use super::catalog::{Checkpoint, ModelSource, lora_files};
use super::error::ApiError;
use super::middleware::Credentials;
use super::plan::{Limits, Mode, base64_image, clip_skip_of, plan};
use super::preview::LivePreview;
use super::state::{Metrics, Options, Progress};
use super::worker::{Finished, Job, LoadedHash, Work};
use crate::png::{PARAMETERS_KEY, png_bytes, text_chunks_of};

/// Everything a handler needs; one per server, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    pub jobs: mpsc::Sender<Job>,
    pub progress: Arc<Progress>,
    pub metrics: Arc<Metrics>,
    pub options: Mutex<Options>,
    pub catalog: RwLock<Vec<Checkpoint>>,
    pub source: ModelSource,
    pub lora_dir: Option<PathBuf>,
    /// Textual-inversion embeddings: listed once the embeddings work lands (see `embeddings`).
    pub embedding_dir: Option<PathBuf>,
    pub limits: Limits,
    /// `sd serve --scheduler-config` overrides, for requests naming a diffusers class.
    pub scheduler_config: Vec<(String, String)>,
    pub credentials: Option<Credentials>,
    pub loaded_hash: LoadedHash,
    /// Set by a stop signal: new generations are refused while the running ones finish.
    pub draining: AtomicBool,
    /// How `current_image` is made (`None`: `sd serve --preview none`, no image).
    pub preview: Option<LivePreview>,
}

type Answer = Result<Json<Value>, ApiError>;

pub(super) fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl AppState {
    fn options(&self) -> Options {
        self.options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The catalog entry `name` means (404 "Model not found" as A1111 answers).
    fn checkpoint(&self, name: &str) -> Result<Checkpoint, ApiError> {
        let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        catalog
            .iter()
            .find(|c| c.answers_to(name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("Model not found: {name}")))
    }

    /// Queue `work` (503 at once when the queue is full) and wait for the worker's answer.
    async fn run(&self, work: Work) -> Result<Option<Finished>, ApiError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(ApiError::busy("the server is stopping"));
        }
        let (reply, answer) = oneshot::channel();
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = self.jobs.try_send(Job { work, reply }) {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(match error {
                mpsc::error::TrySendError::Full(_) => {
                    self.metrics.rejected_busy.fetch_add(1, Ordering::Relaxed);
                    ApiError::busy(format!(
                        "busy: {} requests are already waiting; try again later",
                        self.limits.max_queue
                    ))
                }
                mpsc::error::TrySendError::Closed(_) => ApiError::busy("the server is stopping"),
            });
        }
        answer
            .await
            .map_err(|_| ApiError::internal("the generation worker stopped"))?
    }
}

pub async fn txt2img(state: State<Arc<AppState>>, body: Bytes) -> Answer {
    generate(state, Mode::Txt2Img, body).await
}

pub async fn img2img(state: State<Arc<AppState>>, body: Bytes) -> Answer {
    generate(state, Mode::Img2Img, body).await
}

async fn generate(State(state): State<Arc<AppState>>, mode: Mode, body: Bytes) -> Answer {
    let mut echo: Value = parse_body(&body)?;
    let Some(fields) = echo.as_object_mut() else {
        return Err(ApiError::unprocessable("body: expected a JSON object"));
    };
    let request: GenerateBody = parse_body(&body)?;
    // A1111 leaves the images out of the echo unless asked.
    if request.include_init_images != Some(true) {
        for key in ["init_images", "mask"] {
            if fields.contains_key(key) {
                fields.insert(key.into(), Value::Null);
            }
        }
    }
    let options = state.options();
    let (limits, lora_dir) = (state.limits.clone(), state.lora_dir.clone());
    // Decoding and resizing images is CPU work: off the async threads.
    let plan = tokio::task::spawn_blocking(move || {
        plan(
            request,
            mode,
            &limits,
            options.clip_skip,
            lora_dir.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let mut plan = plan;
    plan.apply_scheduler_config(&state.scheduler_config);
    let checkpoint = state.checkpoint(
        plan.checkpoint
            .as_deref()
            .unwrap_or(&options.sd_model_checkpoint),
    )?;
    let (width, height, batch_size) = (plan.width, plan.height, plan.batch_size);
    let (prompt, negative_prompt) = (plan.prompt.clone(), plan.negative_prompt.clone());
    let (cfg_scale, steps, strength) = (plan.cfg_scale, plan.steps, plan.denoising_strength);
    let send_images = plan.send_images;
    let job = match mode {
        Mode::Txt2Img => "txt2img",
        Mode::Img2Img => "img2img",
    };
    let work = Work::Generate {
        plan: Box::new(plan),
        checkpoint,
        job,
    };
    let finished = state
        .run(work)
        .await?
        .ok_or_else(|| ApiError::internal("the worker returned no images"))?;
    let info = Info {
        prompt: &prompt,
        negative_prompt: &negative_prompt,
        seeds: &finished.seeds,
        width,
        height,
        sampler_name: &finished.sampler_name,
        cfg_scale: f64::from(cfg_scale),
        steps,
        batch_size,
        clip_skip: finished.clip_skip,
        model_name: &finished.model_name,
        model_hash: &finished.model_hash,
        denoising_strength: strength,
        infotexts: &finished.infotexts,
        job_timestamp: &finished.job_timestamp,
    }
    .to_json();
    let images = if send_images {
        tokio::task::spawn_blocking(move || {
            finished
                .images
                .iter()
                .zip(&finished.infotexts)
                .map(|(image, text)| Ok(base64_of(&png_bytes(image, Some(text))?)))
                .collect::<sd_core::Result<Vec<String>>>()
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??
    } else {
        Vec::new()
    };
    Ok(Json(
        json!({"images": images, "parameters": echo, "info": info}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ProgressQuery {
    #[serde(default)]
    skip_current_image: bool,
}

pub async fn progress(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ProgressQuery>,
) -> Answer {
    let (mut view, latents) = state.progress.view();
    if !query.skip_current_image
        && let Some((stamp, latents)) = latents
        && state.preview.is_some()
    {
        let state = Arc::clone(&state);
        view.current_image = tokio::task::spawn_blocking(move || {
            state.preview.as_ref()?.current_image(stamp, &latents)
        })
        .await
        .ok()
        .flatten();
    }
    Ok(Json(view.to_json()))
}

pub async fn interrupt(State(state): State<Arc<AppState>>) -> Answer {
    state.progress.interrupt();
    Ok(Json(json!({})))
}

pub async fn skip(State(state): State<Arc<AppState>>) -> Answer {
    state.progress.skip();
    Ok(Json(Value::Null))
}

pub async fn get_options(State(state): State<Arc<AppState>>) -> Answer {
    let options = state.options();
    Ok(Json(json!({
        "sd_model_checkpoint": options.sd_model_checkpoint,
        // A1111 keeps the full SHA-256 here (`checkpoint_info.sha256`).
        "sd_checkpoint_hash": state.loaded_hash.loaded_sha256(),
        "CLIP_stop_at_last_layers": options.clip_skip,
        "sd_vae": "Automatic",
        "samples_format": "png",
    })))
}

/// `POST options`: the model (loaded in queue order), clip skip; `sd_vae` and
/// `samples_format` only at the values this server has. Other keys are ignored.
pub async fn set_options(State(state): State<Arc<AppState>>, body: Bytes) -> Answer {
    let changes: Map<String, Value> = parse_body(&body)?;
    let mut clip_skip = None;
    let mut checkpoint = None;
    for (key, value) in &changes {
        match key.as_str() {
            "sd_model_checkpoint" => {
                let name = value.as_str().ok_or_else(|| {
                    ApiError::unprocessable("sd_model_checkpoint: expected a model title")
                })?;
                checkpoint = Some(state.checkpoint(name)?);
            }
            "CLIP_stop_at_last_layers" => clip_skip = Some(clip_skip_of(value)?),
            "samples_format"
                if !value
                    .as_str()
                    .is_some_and(|f| f.eq_ignore_ascii_case("png")) =>
            {
                return Err(ApiError::unprocessable(format!(
                    "samples_format: this server writes png only, got {value}"
                )));
            }
            "sd_vae"
                if !value.as_str().is_some_and(|v| {
                    v.eq_ignore_ascii_case("automatic") || v.eq_ignore_ascii_case("none")
                }) =>
            {
                return Err(ApiError::unprocessable(format!(
                    "sd_vae: this server uses each checkpoint's own VAE (\"Automatic\"), got {value}"
                )));
            }
            _ => {}
        }
    }
    if let Some(checkpoint) = checkpoint {
        let title = checkpoint.title.clone();
        state.run(Work::Load(checkpoint)).await?;
        state
            .options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sd_model_checkpoint = title;
    }
    if let Some(clip_skip) = clip_skip {
        state
            .options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clip_skip = clip_skip;
    }
    Ok(Json(Value::Null))
}

pub async fn sd_models(State(state): State<Arc<AppState>>) -> Answer {
    let catalog = state.catalog.read().unwrap_or_else(|e| e.into_inner());
    let entries = catalog
        .iter()
        .map(|c| {
            let sha256 = state.loaded_hash.sha256(&c.title);
            let hash = sha256.as_deref().map(crate::model_hash::short_of_sha256);
            c.to_json(hash, sha256.as_deref())
        })
        .collect();
    Ok(Json(Value::Array(entries)))
}

pub async fn refresh_checkpoints(State(state): State<Arc<AppState>>) -> Answer {
    let found = state.source.scan()?;
    *state.catalog.write().unwrap_or_else(|e| e.into_inner()) = found;
    Ok(Json(Value::Null))
}

pub async fn samplers() -> Answer {
    Ok(Json(samplers_json()))
}

pub async fn schedulers() -> Answer {
    Ok(Json(schedulers_json()))
}

/// The A1111 Lora extension's list: name, alias, path, metadata.
pub async fn loras(State(state): State<Arc<AppState>>) -> Answer {
    let Some(dir) = &state.lora_dir else {
        return Ok(Json(json!([])));
    };
    let entries = lora_files(dir)?
        .into_iter()
        .map(|(name, path)| {
            json!({"name": name, "alias": name, "path": path.display().to_string(), "metadata": {}})
        })
        .collect();
    Ok(Json(Value::Array(entries)))
}

/// A1111's `{"loaded": {name: {...}}, "skipped": {name: {...}}}` for `--embedding-dir`, read
/// anew on each call (as A1111 rescans its folder).
pub async fn embeddings(State(state): State<Arc<AppState>>) -> Answer {
    let mut loaded = serde_json::Map::new();
    let mut skipped = serde_json::Map::new();
    if let Some(dir) = &state.embedding_dir {
        let found = crate::embeddings::load_dir(dir)?;
        for embedding in &found.loaded {
            loaded.insert(
                embedding.name().to_string(),
                json!({"step": null, "sd_checkpoint": null, "sd_checkpoint_name": null,
                       "shape": embedding.width(), "vectors": embedding.len()}),
            );
        }
        for (path, error) in &found.skipped {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            skipped.insert(name, json!({"error": error.to_string()}));
        }
    }
    Ok(Json(json!({"loaded": loaded, "skipped": skipped})))
}

pub async fn upscalers() -> Answer {
    Ok(Json(json!([{
        "name": "None", "model_name": null, "model_path": null, "model_url": null, "scale": 4
    }])))
}

/// The latent upscale modes of the hires fix (`hr_upscaler` values), in A1111's order.
pub async fn latent_upscale_modes() -> Answer {
    let modes: Vec<_> = crate::LatentUpscaler::ALL
        .iter()
        .map(|mode| json!({"name": mode.a1111_name()}))
        .collect();
    Ok(Json(json!(modes)))
}

/// webuiapi asks for the scripts when it connects; there are none.
pub async fn scripts() -> Answer {
    Ok(Json(json!({"txt2img": [], "img2img": []})))
}

pub async fn empty_list() -> Answer {
    Ok(Json(json!([])))
}

#[derive(Debug, Deserialize)]
pub struct PngInfoBody {
    image: String,
}

/// `POST png-info`: the `parameters` text of a PNG, its other text chunks, and the parameters
/// parsed as A1111 parses them. Pictures without text (JPEG, WebP) have empty info.
pub async fn png_info(body: Bytes) -> Answer {
    let request: PngInfoBody = parse_body(&body)?;
    let bytes = base64_image(request.image.trim(), "image")?;
    let chunks = if bytes.starts_with(b"\x89PNG") {
        text_chunks_of(&bytes)?
    } else {
        Vec::new()
    };
    let mut info = String::new();
    let mut items = Map::new();
    for (key, text) in chunks {
        if key == PARAMETERS_KEY {
            info = text;
        } else {
            items.insert(key, text.into());
        }
    }
    let parameters = parse_infotext(&info);
    Ok(Json(
        json!({"info": info, "items": items, "parameters": parameters}),
    ))
}

pub async fn ping() -> Answer {
    Ok(Json(json!({})))
}

/// For load balancers: 200 while this replica takes work (with whether it is busy and how many
/// wait), 503 when its queue is full or it is stopping.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let waiting = state.metrics.queue_depth.load(Ordering::Relaxed);
    let busy = state.metrics.busy.load(Ordering::Relaxed);
    let draining = state.draining.load(Ordering::SeqCst);
    let full = waiting >= state.limits.max_queue;
    let status = if draining || full {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "ready": status == StatusCode::OK,
        "busy": busy,
        "queue": waiting,
        "max_queue": state.limits.max_queue,
        "stopping": draining,
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// The web page: prompt, settings, generate and interrupt, live preview, gallery with each
/// image's parameters, img2img by dropping an image. One file, built into the binary.
pub async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("page.html"))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}
