//! What the request handlers and the worker share: the running job's progress (for `GET
//! progress`), the interrupt and skip flags, the options clients set, and the counters behind
//! `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sd_core::HostTensor;

use super::a1111::ProgressView;

/// A1111's `shared.state` for the one job that runs at a time.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<JobState>,
    interrupt: AtomicBool,
    skip: AtomicBool,
    /// The steps reported since the server started: tells new latents from latents whose
    /// preview was already rendered.
    steps_reported: AtomicU64,
}

#[derive(Debug, Default)]
struct JobState {
    job: String,
    job_count: usize,
    job_no: usize,
    job_timestamp: String,
    sampling_step: usize,
    sampling_steps: usize,
    started: Option<Instant>,
    /// The latents after the last step, for the preview.
    latents: Option<HostTensor>,
    /// Which step the latents are from (`steps_reported` when they were stored).
    stamp: u64,
}

impl Progress {
    fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        // A panic elsewhere leaves plain numbers behind: still readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job of `job_count` iterations starts; interrupt and skip from before it are dropped.
    pub fn begin(&self, job: &str, job_count: usize) -> String {
        self.interrupt.store(false, Ordering::SeqCst);
        self.skip.store(false, Ordering::SeqCst);
        let timestamp = job_timestamp(SystemTime::now());
        *self.state() = JobState {
            job: job.to_string(),
            job_count,
            job_timestamp: timestamp.clone(),
            started: Some(Instant::now()),
            ..JobState::default()
        };
        timestamp
    }

    pub fn begin_iteration(&self, job_no: usize, steps: usize) {
        let mut state = self.state();
        state.job_no = job_no;
        state.sampling_step = 0;
        state.sampling_steps = steps;
    }

    pub fn step(&self, step: usize, total: usize, latents: &HostTensor) {
        let mut state = self.state();
        state.sampling_step = step;
        state.sampling_steps = total;
        state.latents = Some(latents.clone());
        state.stamp = self.steps_reported.fetch_add(1, Ordering::Relaxed) + 1;
    }

    pub fn end(&self) {
        *self.state() = JobState::default();
    }

    pub fn interrupt(&self) {
        self.interrupt.store(true, Ordering::SeqCst);
    }

    pub fn skip(&self) {
        self.skip.store(true, Ordering::SeqCst);
    }

    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    /// Whether a skip was asked for since the last call (it applies to one iteration).
    pub fn take_skip(&self) -> bool {
        self.skip.swap(false, Ordering::SeqCst)
    }

    /// A1111's `progress` numbers (its `progressapi` arithmetic) and the latents to preview,
    /// with their stamp (different for every step).
    pub fn view(&self) -> (ProgressView, Option<(u64, HostTensor)>) {
        let state = self.state();
        let mut view = ProgressView {
            job: state.job.clone(),
            job_count: state.job_count,
            job_no: state.job_no,
            job_timestamp: state.job_timestamp.clone(),
            sampling_step: state.sampling_step,
            sampling_steps: state.sampling_steps,
            interrupted: self.interrupted(),
            skipped: self.skip.load(Ordering::SeqCst),
            ..ProgressView::default()
        };
        if state.job_count == 0 {
            return (view, None);
        }
        let count = state.job_count as f64;
        let mut progress = 0.01 + state.job_no as f64 / count;
        if state.sampling_steps > 0 {
            progress += state.sampling_step as f64 / state.sampling_steps as f64 / count;
        }
        let elapsed = state.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        view.eta_relative = elapsed / progress - elapsed;
        view.progress = progress.min(1.0);
        (
            view,
            state.latents.clone().map(|latents| (state.stamp, latents)),
        )
    }
}

/// The options `GET/POST options` read and set (A1111 keys).
#[derive(Debug, Clone)]
pub struct Options {
    /// The title of the model requests run on unless they override it.
    pub sd_model_checkpoint: String,
    /// A1111's `CLIP_stop_at_last_layers`.
    pub clip_skip: usize,
}

/// Prometheus counters and gauges (`/metrics`).
#[derive(Debug, Default)]
pub struct Metrics {
    pub queue_depth: AtomicUsize,
    pub busy: AtomicBool,
    pub jobs_ok: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub jobs_interrupted: AtomicU64,
    pub jobs_abandoned: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub images: AtomicU64,
    pub steps: AtomicU64,
    /// Microseconds, summed over steps and over images.
    pub step_micros: AtomicU64,
    pub image_micros: AtomicU64,
    /// Responses by status class (2xx, 4xx, 5xx).
    pub responses: [AtomicU64; 3],
}

impl Metrics {
    pub fn count_response(&self, status: u16) {
        let class = match status {
            500.. => 2,
            400.. => 1,
            _ => 0,
        };
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let seconds = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        metric(
            "sd_queue_depth",
            "gauge",
            "Generation requests waiting behind the running one.",
            &[("", self.queue_depth.load(Ordering::Relaxed).to_string())],
        );
        metric(
            "sd_busy",
            "gauge",
            "1 while a job runs.",
            &[("", u8::from(self.busy.load(Ordering::Relaxed)).to_string())],
        );
        metric(
            "sd_jobs_total",
            "counter",
            "Finished jobs by outcome.",
            &[
                ("{outcome=\"ok\"}", get(&self.jobs_ok).to_string()),
                ("{outcome=\"failed\"}", get(&self.jobs_failed).to_string()),
                (
                    "{outcome=\"interrupted\"}",
                    get(&self.jobs_interrupted).to_string(),
                ),
                (
                    "{outcome=\"abandoned\"}",
                    get(&self.jobs_abandoned).to_string(),
                ),
            ],
        );
        metric(
            "sd_rejected_busy_total",
            "counter",
            "Requests refused because the queue was full.",
            &[("", get(&self.rejected_busy).to_string())],
        );
        metric(
            "sd_images_total",
            "counter",
            "Images generated.",
            &[("", get(&self.images).to_string())],
        );
        metric(
            "sd_steps_total",
            "counter",
            "Denoising steps (model evaluations) run.",
            &[("", get(&self.steps).to_string())],
        );
        metric(
            "sd_step_seconds_total",
            "counter",
            "Time spent in denoising steps.",
            &[("", seconds(&self.step_micros).to_string())],
        );
        metric(
            "sd_image_seconds_total",
            "counter",
            "Generation time (text encoding to decoded pixels), summed over iterations.",
            &[("", seconds(&self.image_micros).to_string())],
        );
        metric(
            "sd_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &[
                ("{class=\"2xx\"}", get(&self.responses[0]).to_string()),
                ("{class=\"4xx\"}", get(&self.responses[1]).to_string()),
                ("{class=\"5xx\"}", get(&self.responses[2]).to_string()),
            ],
        );
        out
    }
}

/// A1111's `job_timestamp`: `%Y%m%d%H%M%S` in UTC.
pub fn job_timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_a1111s_utc_digits() {
        // 2024-02-29 13:45:07 UTC = 1709214307 (date -u -d @1709214307).
        let at = UNIX_EPOCH + Duration::from_secs(1_709_214_307);
        assert_eq!(job_timestamp(at), "20240229134507");
        assert_eq!(job_timestamp(UNIX_EPOCH), "19700101000000");
    }

    #[test]
    fn progress_follows_a1111s_arithmetic() {
        let progress = Progress::default();
        let (idle, _) = progress.view();
        assert_eq!((idle.progress, idle.job_count), (0.0, 0));
        progress.begin("txt2img", 2);
        progress.begin_iteration(1, 10);
        progress.step(5, 10, &HostTensor::zeros(vec![1, 4, 2, 2]));
        let (view, latents) = progress.view();
        assert!(
            (view.progress - (0.01 + 0.5 + 0.25)).abs() < 1e-9,
            "{}",
            view.progress
        );
        assert!(latents.is_some());
        progress.interrupt();
        assert!(progress.view().0.interrupted);
        progress.end();
        assert_eq!(progress.view().0.job_count, 0);
        // A new job forgets an old interrupt.
        progress.begin("txt2img", 1);
        assert!(!progress.interrupted());
    }

    #[test]
    fn metrics_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.images.fetch_add(3, Ordering::Relaxed);
        metrics.count_response(404);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE sd_images_total counter\nsd_images_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("sd_http_responses_total{class=\"4xx\"} 1\n"),
            "{text}"
        );
    }
}
