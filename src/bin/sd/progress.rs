//! The progress bar of `sd generate`: model evaluations done, it/s and time left.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stable_diffusion::{Control, StepProgress};

/// A bar on stderr (hidden with --quiet, and by indicatif when stderr is not a terminal).
pub struct StepBar {
    bar: ProgressBar,
}

impl StepBar {
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, {per_sec}, ETA {eta}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// Record one finished step; never cancels.
    pub fn update(&self, progress: &StepProgress<'_>) -> Control {
        self.bar.set_length(progress.total as u64);
        self.bar.set_position(progress.step as u64);
        Control::Continue
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
