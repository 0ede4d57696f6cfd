//! `scheduler_config.json`, read the way diffusers' `from_config` reads it.
//!
//! Every key is optional: a key the file lacks takes the default of the scheduler class being
//! built, not of the class that wrote the file. SD 1.5's file (written for PNDM) has no
//! `timestep_spacing`, so Euler built from it spaces `linspace` (999, 888, …) while DDIM spaces
//! `leading` (901, 801, …), exactly as diffusers does. Keys a class doesn't know are ignored.

use std::path::{Path, PathBuf};

use sd_core::config_file::{check_positive, config_from_value, parse_config, read_config_text};
use sd_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::sigmas::SigmaSpacing;

/// The parsed keys of a `scheduler_config.json`; `None` where the file has no value.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// Where the config came from, for error messages.
    #[serde(skip)]
    pub origin: PathBuf,
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    pub steps_offset: Option<i64>,
    pub timestep_spacing: Option<String>,
    pub prediction_type: Option<String>,
    pub set_alpha_to_one: Option<bool>,
    pub skip_prk_steps: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub variance_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<String>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub lambda_min_clipped: Option<f64>,
    pub predict_x0: Option<bool>,
    pub disable_corrector: Option<Vec<usize>>,
    pub original_inference_steps: Option<usize>,
    pub timestep_scaling: Option<f64>,
    /// `DPMSolverSDEScheduler`'s Brownian-tree seed (unset: the image's seed, see
    /// `dpm_solver_sde.rs`).
    pub noise_sampler_seed: Option<u64>,
    /// σ spacings `DPMSolverSDEScheduler` implements; every other class refuses them.
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    // Options we do not implement; a file that turns one on is refused rather than misread.
    pub thresholding: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
}

/// The most training timesteps a config may give (SD uses 1000): the schedules are tables of
/// this length, built for every generation.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// SD 1.5's `scheduler/scheduler_config.json` (runwayml/stable-diffusion-v1-5), for single-file
/// checkpoints that carry no scheduler config.
pub const SD15_SCHEDULER_CONFIG: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

impl SchedulerConfig {
    /// Read a `scheduler_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json(&read_config_text(path)?, path)
    }

    /// Parse config JSON; `origin` names it in errors.
    ///
    /// Keys listed in `_use_default_values` (diffusers' record of the values it filled in with
    /// the writing class's defaults) count as missing, as they do for `from_config`.
    pub fn from_json(text: &str, origin: impl Into<PathBuf>) -> Result<Self> {
        let origin = origin.into();
        let mut value: serde_json::Value = parse_config(text, &origin)?;
        if let Some(object) = value.as_object_mut() {
            let defaulted: Vec<String> = object
                .get("_use_default_values")
                .and_then(|v| v.as_array())
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for key in defaulted {
                object.remove(&key);
            }
        }
        let mut config: SchedulerConfig = config_from_value(value, &origin)?;
        config.origin = origin;
        Ok(config)
    }

    /// This config with keys set as `KEY=VALUE` overrides (`sd generate --scheduler-config`),
    /// applied in order, as if the file had said so. A value is read as JSON where it parses as
    /// JSON (`true`, `3`, `0.5`, `null`, `[1, 2]`, `"text"`) and as a string otherwise
    /// (`algorithm_type=sde-dpmsolver++`).
    ///
    /// A key this crate does not read, or a value of the wrong type for its key, is an
    /// [`Error::InvalidArgument`] naming both; whether a well-typed value is one the scheduler
    /// supports is checked when the scheduler is built, as for a file.
    ///
    /// ```
    /// use sd_schedulers::{scheduler_from_name, SchedulerConfig};
    ///
    /// let config = SchedulerConfig::sd15().with_overrides(&[
    ///     ("algorithm_type".into(), "sde-dpmsolver++".into()),
    ///     ("use_karras_sigmas".into(), "true".into()),
    /// ])?;
    /// assert_eq!(config.use_karras_sigmas, Some(true));
    /// let mut sampler = scheduler_from_name("DPMSolverSinglestepScheduler", &config)?;
    /// sampler.set_timesteps(20)?;
    /// assert!(SchedulerConfig::sd15().with_overrides(&[("solver_order".into(), "two".into())]).is_err());
    /// # Ok::<(), sd_core::Error>(())
    /// ```
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let mut fields = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => {
                return Err(override_error(
                    "",
                    "",
                    "the config could not be represented",
                ));
            }
        };
        for (key, text) in overrides {
            let key = key.trim();
            if key.starts_with('_') || !fields.contains_key(key) {
                let known: Vec<&str> = fields
                    .keys()
                    .map(String::as_str)
                    .filter(|k| !k.starts_with('_'))
                    .collect();
                return Err(override_error(
                    key,
                    text,
                    format!("unknown key; known keys: {}", known.join(", ")),
                ));
            }
            let value = serde_json::from_str(text.trim())
                .unwrap_or_else(|_| serde_json::Value::String(text.trim().to_string()));
            // Type-check the one key on its own, so the error is about it.
            let alone =
                serde_json::Value::Object([(key.to_string(), value.clone())].into_iter().collect());
            if let Err(e) = serde_json::from_value::<SchedulerConfig>(alone) {
                return Err(override_error(key, text, e.to_string()));
            }
            fields.insert(key.to_string(), value);
        }
        let mut config: SchedulerConfig = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| override_error("", "", e.to_string()))?;
        config.origin = PathBuf::from(format!(
            "{} with --scheduler-config overrides",
            self.origin.display()
        ));
        Ok(config)
    }

    /// SD 1.5's scheduler config (see [`SD15_SCHEDULER_CONFIG`]).
    pub fn sd15() -> Self {
        // The constant is valid JSON (a unit test parses it), so this cannot fail.
        Self::from_json(SD15_SCHEDULER_CONFIG, "<built-in SD 1.5 scheduler config>")
            .unwrap_or_default()
    }

    /// An error about `field` of this config.
    pub(crate) fn error(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            path: self.origin.clone(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// Check every numeric value against its range before a scheduler uses any: a zero or
    /// negative beta or range, a NaN, or a count that would allocate terabytes fails here with
    /// the field named, instead of as a panic in a clamp, an abort, or a black image.
    fn check_values(&self) -> Result<()> {
        let num_train_timesteps = self.num_train_timesteps.unwrap_or(1000);
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&num_train_timesteps) {
            return Err(self.error(
                "num_train_timesteps",
                format!("{num_train_timesteps} is not in 2..={MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        let beta = |field: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value < 1.0 {
                Ok(())
            } else {
                Err(self.error(field, format!("{value} is not in (0, 1)")))
            }
        };
        for (field, value) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            value.map_or(Ok(()), |v| beta(field, v))?;
        }
        for &value in self.trained_betas.iter().flatten() {
            beta("trained_betas", value)?;
        }
        for (field, value) in [
            ("clip_sample_range", self.clip_sample_range),
            ("sigma_min", self.sigma_min),
            ("sigma_max", self.sigma_max),
            ("timestep_scaling", self.timestep_scaling),
        ] {
            value.map_or(Ok(()), |v| check_positive(&self.origin, field, v))?;
        }
        if let (Some(min), Some(max)) = (self.sigma_min, self.sigma_max)
            && min >= max
        {
            return Err(self.error("sigma_min", format!("{min} is not below sigma_max {max}")));
        }
        let timesteps = num_train_timesteps as i64;
        if let Some(offset) = self.steps_offset
            && !(0..timesteps).contains(&offset)
        {
            return Err(self.error(
                "steps_offset",
                format!("{offset} is not in 0..{num_train_timesteps}"),
            ));
        }
        if let Some(steps) = self.original_inference_steps
            && !(1..=num_train_timesteps).contains(&steps)
        {
            return Err(self.error(
                "original_inference_steps",
                format!("{steps} is not in 1..={num_train_timesteps}"),
            ));
        }
        Ok(())
    }

    /// The noise schedule settings, with `defaults` (the scheduler class's) for missing keys.
    /// A σ spacing other than Karras' turned on is refused (see [`Self::sigma_spacing`]).
    pub(crate) fn noise_schedule(&self, defaults: &ClassDefaults) -> Result<NoiseScheduleConfig> {
        for (field, on) in [
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
        ] {
            if on == Some(true) {
                return Err(self.error(field, "is not supported by this scheduler class"));
            }
        }
        self.noise_schedule_any_spacing(defaults)
    }

    /// [`Self::noise_schedule`] for a class that reads every σ spacing option itself
    /// ([`Self::sigma_spacing`]).
    pub(crate) fn noise_schedule_any_spacing(
        &self,
        defaults: &ClassDefaults,
    ) -> Result<NoiseScheduleConfig> {
        self.check_values()?;
        let num_train_timesteps = self.num_train_timesteps.unwrap_or(1000);
        let beta_schedule = match &self.trained_betas {
            Some(betas) if betas.len() != num_train_timesteps => {
                return Err(self.error(
                    "trained_betas",
                    format!(
                        "has {} values, expected num_train_timesteps = {num_train_timesteps}",
                        betas.len()
                    ),
                ));
            }
            Some(betas) => BetaSchedule::Trained(betas.clone()),
            None => {
                let start = self.beta_start.unwrap_or(defaults.beta_start);
                let end = self.beta_end.unwrap_or(defaults.beta_end);
                match self
                    .beta_schedule
                    .as_deref()
                    .unwrap_or(defaults.beta_schedule)
                {
                    "linear" => BetaSchedule::Linear { start, end },
                    "scaled_linear" => BetaSchedule::ScaledLinear { start, end },
                    "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
                    other => {
                        return Err(self.error(
                            "beta_schedule",
                            format!(
                                "`{other}` is not supported; expected linear, scaled_linear or \
                                 squaredcos_cap_v2"
                            ),
                        ));
                    }
                }
            }
        };
        let timestep_spacing = match self
            .timestep_spacing
            .as_deref()
            .unwrap_or(defaults.timestep_spacing)
        {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            other => {
                return Err(self.error(
                    "timestep_spacing",
                    format!("`{other}` is not supported; expected leading, trailing or linspace"),
                ));
            }
        };
        let prediction_type = match self.prediction_type.as_deref().unwrap_or("epsilon") {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => {
                return Err(self.error(
                    "prediction_type",
                    format!("`{other}` is not supported; expected epsilon, v_prediction or sample"),
                ));
            }
        };
        for (field, on) in [
            ("thresholding", self.thresholding),
            ("rescale_betas_zero_snr", self.rescale_betas_zero_snr),
            ("use_lu_lambdas", self.use_lu_lambdas),
            ("use_flow_sigmas", self.use_flow_sigmas),
            ("use_dynamic_shifting", self.use_dynamic_shifting),
        ] {
            if on == Some(true) {
                return Err(self.error(field, "is not supported by sd-schedulers"));
            }
        }
        Ok(NoiseScheduleConfig {
            num_train_timesteps,
            beta_schedule,
            steps_offset: self.steps_offset.unwrap_or(0),
            timestep_spacing,
            prediction_type,
        })
    }

    /// The σ spacing `use_karras_sigmas`, `use_exponential_sigmas` and `use_beta_sigmas` ask for
    /// (`None`: the interpolated training σ); diffusers refuses more than one.
    pub(crate) fn sigma_spacing(&self) -> Result<Option<SigmaSpacing>> {
        let chosen: Vec<(&str, SigmaSpacing)> = [
            (
                "use_karras_sigmas",
                self.use_karras_sigmas,
                SigmaSpacing::Karras,
            ),
            (
                "use_exponential_sigmas",
                self.use_exponential_sigmas,
                SigmaSpacing::Exponential,
            ),
            ("use_beta_sigmas", self.use_beta_sigmas, SigmaSpacing::Beta),
        ]
        .into_iter()
        .filter(|(_, on, _)| *on == Some(true))
        .map(|(field, _, spacing)| (field, spacing))
        .collect();
        match chosen.as_slice() {
            [] => Ok(None),
            [(_, spacing)] => Ok(Some(*spacing)),
            [(first, _), (second, _), ..] => Err(self.error(
                first,
                format!("only one σ spacing may be on, but {second} is on too"),
            )),
        }
    }

    /// Refuse `prediction_type = sample` for the schedulers that have no formula for it.
    pub(crate) fn require_noise_prediction(&self, prediction: PredictionType) -> Result<()> {
        if prediction == PredictionType::Sample {
            return Err(self.error(
                "prediction_type",
                "`sample` is not supported by this scheduler; expected epsilon or v_prediction",
            ));
        }
        Ok(())
    }
}

/// A `KEY=VALUE` scheduler-config override that cannot be applied.
fn override_error(key: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::invalid_argument(
        "scheduler config",
        format!("`{key}={value}`: {}", reason.into()),
    )
}

/// Split one `KEY=VALUE` scheduler-config override (as `--scheduler-config` takes it) at its
/// first `=`.
pub fn parse_override(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(Error::invalid_argument(
            "scheduler config",
            format!("`{text}` is not KEY=VALUE (e.g. use_karras_sigmas=true)"),
        )),
    }
}

/// The keys whose defaults differ between diffusers scheduler classes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClassDefaults {
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: &'static str,
    pub timestep_spacing: &'static str,
}

impl ClassDefaults {
    /// DDPM-era defaults most classes share: linear betas 1e-4 … 0.02.
    pub const fn linear(timestep_spacing: &'static str) -> Self {
        ClassDefaults {
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear",
            timestep_spacing,
        }
    }
}

/// How the training betas were laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum BetaSchedule {
    Linear {
        start: f64,
        end: f64,
    },
    /// Linear in √β (SD's schedule).
    ScaledLinear {
        start: f64,
        end: f64,
    },
    /// The cosine schedule of Nichol & Dhariwal, capped at β = 0.999.
    SquaredCosCapV2,
    Trained(Vec<f64>),
}

/// How inference timesteps are picked from the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// Multiples of ⌊T/steps⌋ plus `steps_offset` (901, 801, … for 10 steps and offset 1).
    Leading,
    /// Counting down from T−1 in steps of T/steps (999, 899, …).
    Trailing,
    /// Evenly spaced over [0, T−1] (999, 888, …).
    Linspace,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// The settings every scheduler shares, resolved against its class defaults.
#[derive(Debug, Clone)]
pub(crate) struct NoiseScheduleConfig {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub steps_offset: i64,
    pub timestep_spacing: TimestepSpacing,
    pub prediction_type: PredictionType,
}
