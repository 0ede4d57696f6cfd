//! `sd serve`: AUTOMATIC1111's HTTP API on tokio + axum, so the tools that speak it (Krita and
//! Photoshop plugins, chat front ends, `webuiapi` scripts, bots) can use this project as their
//! backend.
//!
//! ```text
//! request ─▶ middleware (basic auth, log line) ─▶ route (routes.rs)
//!    txt2img/img2img: body ─▶ a1111.rs (A1111's fields) ─▶ plan.rs (limits, images, seeds,
//!    sampler names) ─▶ bounded FIFO queue ─▶ worker.rs (one thread; owns the model; runs
//!    StableDiffusion::generate_with_progress) ─▶ PNGs with their infotext ─▶ A1111's answer
//! ```
//!
//! - One generation runs at a time (each already uses every core); requests wait in arrival
//!   order, at most [`Limits::max_queue`] of them; one more is answered 503 at once.
//! - Progress, interrupt and skip go through `state.rs`, read by the worker at every step.
//! - Names from requests (models, LoRAs) only match entries of their folders' listings
//!   (`catalog.rs`); images come from the request body only.
//! - Nothing a second replica would need is kept between requests except what A1111 keeps
//!   (the `options` a client sets): replicas sit behind any HTTP load balancer, which can use
//!   `/internal/ping`, `/internal/ready` and `/metrics`.

mod a1111;
mod catalog;
mod error;
mod hashes;
mod middleware;
mod plan;
mod preview;
mod routes;
mod state;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use sd_core::{Backend, Error, Result};

pub use catalog::{Checkpoint, ModelSource};
pub use plan::Limits;
pub use worker::BackendFactory;

use crate::preview::PreviewMethod;
use middleware::Credentials;
use preview::LivePreview;
use routes::AppState;
use state::{Metrics, Options, Progress};
use worker::{Worker, log_event};

/// How `sd serve` was started.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Default `127.0.0.1:7860` (A1111's port, loopback only).
    pub listen: SocketAddr,
    pub models: ModelSource,
    /// Component configs for single-file checkpoints of other shapes than SD 1.5.
    pub config_dir: Option<PathBuf>,
    /// The folder of `<lora:NAME:…>` prompt tags.
    pub lora_dir: Option<PathBuf>,
    /// The folder of textual-inversion embeddings, loaded with each model (A1111's
    /// `--embeddings-dir`).
    pub embedding_dir: Option<PathBuf>,
    /// `user:password` for HTTP basic auth on every route.
    pub api_auth: Option<String>,
    pub limits: Limits,
    /// How `GET progress` makes `current_image` (as `sd generate --preview`); `None`: never.
    pub preview: Option<PreviewMethod>,
    /// `scheduler_config.json` keys changed for every request that names a diffusers scheduler
    /// class (`sd serve --scheduler-config KEY=VALUE`), as a request's
    /// `SamplerSettings::config_overrides`; A1111's sampler names ignore them. Checked (keys and
    /// value types) before the model loads.
    pub scheduler_config: Vec<(String, String)>,
}

/// Load the first model, listen, and answer until SIGINT or SIGTERM; then stop taking work,
/// finish what was accepted, and return.
pub fn serve<B: Backend + 'static>(
    config: ServeConfig,
    make_backend: BackendFactory<B>,
) -> Result<()> {
    let catalog = config.models.scan()?;
    let Some(first) = catalog.first().cloned() else {
        return Err(Error::invalid_argument(
            "--models-dir",
            "holds no SD checkpoint (a .safetensors file or a diffusers folder with model_index.json)",
        ));
    };
    crate::schedulers::SchedulerConfig::sd15().with_overrides(&config.scheduler_config)?;
    if let Some(auth) = &config.api_auth
        && !auth.contains(':')
    {
        return Err(Error::invalid_argument(
            "--api-auth",
            "expected USER:PASSWORD",
        ));
    }
    let preview = config
        .preview
        .as_ref()
        .map(|method| LivePreview::load(&make_backend, method))
        .transpose()?;
    let progress = Arc::new(Progress::default());
    let metrics = Arc::new(Metrics::default());
    let loaded_hash = Arc::new(hashes::ModelHashes::default());

    // The worker loads the first model before the port opens, so a bad model fails at once and
    // a replica that answers is ready.
    let (jobs, queue) = tokio::sync::mpsc::channel(config.limits.max_queue.max(1));
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
    let worker = {
        let (progress, metrics, loaded_hash) = (
            Arc::clone(&progress),
            Arc::clone(&metrics),
            Arc::clone(&loaded_hash),
        );
        let config_dir = config.config_dir.clone();
        let embedding_dir = config.embedding_dir.clone();
        let first = first.clone();
        std::thread::Builder::new()
            .name("sd-worker".into())
            .spawn(move || {
                let mut worker =
                    Worker::new(make_backend, config_dir, embedding_dir, progress, metrics);
                let loaded = worker.load(&first, &loaded_hash);
                let ok = loaded.is_ok();
                let _ = loaded_tx.send(loaded);
                if ok {
                    worker.run(queue, loaded_hash);
                }
            })
            .map_err(|e| {
                Error::invalid_argument("sd serve", format!("cannot start the worker: {e}"))
            })?
    };
    loaded_rx
        .recv()
        .map_err(|_| Error::invalid_argument("sd serve", "the worker stopped while loading"))??;

    let state = Arc::new(AppState {
        jobs,
        progress,
        metrics,
        options: Mutex::new(Options {
            sd_model_checkpoint: first.title.clone(),
            clip_skip: 1,
        }),
        catalog: RwLock::new(catalog),
        source: config.models.clone(),
        lora_dir: config.lora_dir.clone(),
        embedding_dir: config.embedding_dir.clone(),
        limits: config.limits.clone(),
        scheduler_config: config.scheduler_config.clone(),
        credentials: config.api_auth.as_deref().map(|a| Credentials(a.into())),
        loaded_hash,
        draining: AtomicBool::new(false),
        preview,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| io_error(&config.listen, e))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| io_error(&config.listen, e))?;
        let address = listener
            .local_addr()
            .map_err(|e| io_error(&config.listen, e))?;
        log_event(&format!(
            r#""event":"listening","address":"http://{address}","model":{}"#,
            serde_json::Value::from(first.title.as_str())
        ));
        let app = router(Arc::clone(&state));
        axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal(Arc::clone(&state)))
            .await
            .map_err(|e| io_error(&config.listen, e))
    });
    // The router and its clones of the queue are gone: the worker ends after the last job.
    drop(state);
    let _ = worker.join();
    log_event(r#""event":"stopped""#);
    served
}

fn io_error(address: &SocketAddr, source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from(address.to_string()),
        source,
    }
}

/// Every route, behind auth and the request log.
fn router(state: Arc<AppState>) -> Router {
    use routes::*;
    let api = Router::new()
        .route("/", get(page))
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/skip", post(skip))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/refresh-checkpoints", post(refresh_checkpoints))
        .route("/sdapi/v1/samplers", get(samplers))
        .route("/sdapi/v1/schedulers", get(schedulers))
        .route("/sdapi/v1/loras", get(loras))
        .route("/sdapi/v1/embeddings", get(embeddings))
        .route("/sdapi/v1/upscalers", get(upscalers))
        .route("/sdapi/v1/latent-upscale-modes", get(latent_upscale_modes))
        .route("/sdapi/v1/scripts", get(scripts))
        .route("/sdapi/v1/sd-vae", get(empty_list))
        .route("/sdapi/v1/prompt-styles", get(empty_list))
        .route("/sdapi/v1/png-info", post(png_info))
        .route("/internal/ping", get(ping))
        .route("/internal/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found);
    api.layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::require_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::log_requests,
        ))
        .with_state(state)
}

/// Resolves on SIGINT or SIGTERM, after marking the server as stopping.
async fn stop_signal(state: Arc<AppState>) {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    state.draining.store(true, Ordering::SeqCst);
    log_event(r#""event":"stopping","reason":"signal""#);
}
