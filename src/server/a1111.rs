//! AUTOMATIC1111's wire format: the txt2img/img2img request body (field names and defaults of
//! its `modules/api/models.py`), and the JSON of its answers (`info`, `progress`, the lists).
//!
//! Unknown fields are ignored, as A1111's clients send many (scripts, extensions, UI state).
//! Every field is optional: `null` and absent both mean A1111's default.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;

/// A1111's defaults (processing.py, models.py).
pub const DEFAULT_STEPS: i64 = 50;
pub const DEFAULT_CFG_SCALE: f64 = 7.0;
pub const DEFAULT_SIDE: i64 = 512;
pub const DEFAULT_DENOISING_STRENGTH: f64 = 0.75;
/// `hr_scale`'s default (models.py / processing.py).
pub const DEFAULT_HR_SCALE: f64 = 2.0;
/// `sampler_index`'s default in models.py: the sampler when the request names none.
pub const DEFAULT_SAMPLER: &str = "Euler";

/// The body of `POST /sdapi/v1/txt2img` and `/img2img` (one struct: the fields of one endpoint
/// are simply absent from the other's requests).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GenerateBody {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub styles: Option<Vec<String>>,
    pub seed: Option<i64>,
    pub subseed_strength: Option<f64>,
    pub sampler_name: Option<String>,
    pub sampler_index: Option<String>,
    pub scheduler: Option<String>,
    pub batch_size: Option<i64>,
    pub n_iter: Option<i64>,
    pub steps: Option<i64>,
    pub cfg_scale: Option<f64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub restore_faces: Option<bool>,
    pub tiling: Option<bool>,
    pub eta: Option<f64>,
    pub override_settings: Option<Map<String, Value>>,
    pub script_name: Option<String>,
    pub alwayson_scripts: Option<Map<String, Value>>,
    pub send_images: Option<bool>,
    pub denoising_strength: Option<f64>,
    // txt2img's hires fix.
    pub enable_hr: Option<bool>,
    pub hr_scale: Option<f64>,
    pub hr_upscaler: Option<String>,
    pub hr_second_pass_steps: Option<i64>,
    pub hr_resize_x: Option<i64>,
    pub hr_resize_y: Option<i64>,
    pub hr_checkpoint_name: Option<String>,
    pub hr_sampler_name: Option<String>,
    pub hr_scheduler: Option<String>,
    pub hr_prompt: Option<String>,
    pub hr_negative_prompt: Option<String>,
    // img2img.
    pub init_images: Option<Vec<String>>,
    pub mask: Option<String>,
    pub resize_mode: Option<i64>,
    /// 0/1 in A1111 (some clients send a boolean).
    pub inpainting_mask_invert: Option<Value>,
    pub initial_noise_multiplier: Option<f64>,
    pub include_init_images: Option<bool>,
    /// Sets both `mask_blur_x` and `mask_blur_y` when given (A1111's property setter).
    pub mask_blur: Option<i64>,
    pub mask_blur_x: Option<i64>,
    pub mask_blur_y: Option<i64>,
    /// 0 fill, 1 original, 2 latent noise, 3 latent nothing.
    pub inpainting_fill: Option<i64>,
}

/// A1111's `mask_blur_x`/`mask_blur_y` default (its img2img dataclass).
pub const DEFAULT_MASK_BLUR: i64 = 4;
/// A1111's `inpainting_fill` default: 0, "fill".
pub const DEFAULT_INPAINTING_FILL: i64 = 0;

/// Parse a request body, naming the field that does not fit (A1111 answers 422).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::unprocessable(format!("body: {inner}"))
        } else {
            ApiError::unprocessable(format!("{path}: {inner}"))
        }
    })
}

/// `true` for a JSON flag given as a boolean or a non-zero number.
pub fn truthy(value: Option<&Value>) -> Result<bool, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(on)) => Ok(*on),
        Some(Value::Number(n)) => Ok(n.as_f64() != Some(0.0)),
        Some(other) => Err(ApiError::unprocessable(format!(
            "expected 0, 1 or a boolean, found {other}"
        ))),
    }
}

/// What A1111's `Processed.js()` says about one finished request: the `info` string of the
/// txt2img/img2img answer (clients `json.loads` it).
#[derive(Debug)]
pub struct Info<'a> {
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    pub seeds: &'a [u64],
    pub width: usize,
    pub height: usize,
    pub sampler_name: &'a str,
    pub cfg_scale: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub clip_skip: usize,
    pub model_name: &'a str,
    pub model_hash: &'a str,
    pub denoising_strength: Option<f64>,
    pub infotexts: &'a [String],
    pub job_timestamp: &'a str,
}

impl Info<'_> {
    pub fn to_json(&self) -> String {
        let count = self.seeds.len();
        let all = |text: &str| vec![text.to_string(); count];
        json!({
            "prompt": self.prompt,
            "all_prompts": all(self.prompt),
            "negative_prompt": self.negative_prompt,
            "all_negative_prompts": all(self.negative_prompt),
            "seed": self.seeds.first(),
            "all_seeds": self.seeds,
            "subseed": self.seeds.first(),
            "all_subseeds": self.seeds,
            "subseed_strength": 0,
            "width": self.width,
            "height": self.height,
            "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "restore_faces": false,
            "face_restoration_model": null,
            "sd_model_name": self.model_name,
            "sd_model_hash": self.model_hash,
            "sd_vae_name": null,
            "sd_vae_hash": null,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": self.denoising_strength,
            "extra_generation_params": {},
            "index_of_first_image": 0,
            "infotexts": self.infotexts,
            "styles": [],
            "job_timestamp": self.job_timestamp,
            "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": false,
            "version": format!("sd-rs {}", env!("CARGO_PKG_VERSION")),
        })
        .to_string()
    }
}

/// `GET schedulers`: the schedule types a request's `scheduler` may name, as A1111 lists them
/// (`sd_schedulers::a1111_menu`); "automatic" lets the sampler decide.
pub fn schedulers_json() -> Value {
    let (_, schedule_types) = crate::schedulers::a1111_menu();
    Value::Array(
        schedule_types
            .iter()
            .map(|kind| {
                json!({
                    "name": kind.name,
                    "label": kind.label,
                    "aliases": if kind.aliases.is_empty() { Value::Null } else { json!(kind.aliases) },
                    "default_rho": kind.default_rho.unwrap_or(-1.0),
                    "need_inner_model": kind.need_inner_model,
                })
            })
            .collect(),
    )
}

/// `GET samplers`: A1111's sampler menu (`sd_schedulers::a1111_menu`), each name once with its
/// aliases and default schedule type (diffusers class names are accepted too, but A1111's
/// clients list these).
pub fn samplers_json() -> Value {
    let (samplers, _) = crate::schedulers::a1111_menu();
    Value::Array(
        samplers
            .iter()
            .map(|sampler| {
                let options = match sampler.default_scheduler {
                    Some(schedule) => json!({"scheduler": schedule}),
                    None => json!({}),
                };
                json!({"name": sampler.name, "aliases": sampler.aliases, "options": options})
            })
            .collect(),
    )
}

/// The fields of A1111's `progress` answer.
#[derive(Debug, Default, Clone)]
pub struct ProgressView {
    pub progress: f64,
    pub eta_relative: f64,
    pub job: String,
    pub job_count: usize,
    pub job_no: usize,
    pub job_timestamp: String,
    pub sampling_step: usize,
    pub sampling_steps: usize,
    pub interrupted: bool,
    pub skipped: bool,
    /// Base64 PNG of the latent preview.
    pub current_image: Option<String>,
}

impl ProgressView {
    pub fn to_json(&self) -> Value {
        json!({
            "progress": self.progress,
            "eta_relative": self.eta_relative,
            "state": {
                "skipped": self.skipped,
                "interrupted": self.interrupted,
                "stopping_generation": false,
                "job": self.job,
                "job_count": self.job_count,
                "job_timestamp": self.job_timestamp,
                "job_no": self.job_no,
                "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps,
            },
            "current_image": self.current_image,
            "textinfo": null,
        })
    }
}

/// A1111's `parse_generation_parameters` in outline: the prompt, `Negative prompt`, and each
/// `Key: value` of the last line (quoted values unquoted; `Size` also as `Size-1`/`Size-2`).
pub fn parse_infotext(text: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    let mut lines: Vec<&str> = text.trim().lines().collect();
    let last = lines.last().copied().unwrap_or_default();
    let pairs = parse_pairs(last);
    if pairs.len() >= 3 {
        lines.pop();
    }
    let mut prompt = Vec::new();
    let mut negative: Option<Vec<&str>> = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            negative = Some(vec![rest.trim_start()]);
        } else if let Some(negative) = negative.as_mut() {
            negative.push(line);
        } else {
            prompt.push(line);
        }
    }
    fields.insert("Prompt".into(), prompt.join("\n").into());
    fields.insert(
        "Negative prompt".into(),
        negative.map(|n| n.join("\n")).unwrap_or_default().into(),
    );
    for (key, value) in pairs {
        if key == "Size"
            && let Some((w, h)) = value.split_once('x')
        {
            fields.insert("Size-1".into(), w.into());
            fields.insert("Size-2".into(), h.into());
        }
        fields.insert(key, value.into());
    }
    fields
}

/// `Key: value, Key: "quoted, value", …` as (key, value) pairs.
fn parse_pairs(line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = line.trim();
    while let Some(colon) = rest.find(": ") {
        let key = rest[..colon].trim().to_string();
        if key.is_empty() || key.contains(['"', ',']) {
            break;
        }
        let after = &rest[colon + 2..];
        let (value, next) = if after.starts_with('"') {
            // A JSON string: find its end by parsing it.
            let mut stream = serde_json::Deserializer::from_str(after).into_iter::<String>();
            match stream.next() {
                Some(Ok(value)) => (value, &after[stream.byte_offset()..]),
                _ => break,
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        pairs.push((key, value));
        rest = next.trim_start_matches(',').trim_start();
    }
    pairs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;
    use crate::parameters::Parameters;

    #[test]
    fn unknown_fields_and_nulls_are_fine_wrong_types_name_the_field() {
        let body: GenerateBody = parse_body(
            br#"{"prompt": "a fox", "steps": 3, "hr_checkpoint_name": null,
                 "alwayson_scripts": {}, "whatever": [1, 2], "sampler_name": null}"#,
        )
        .unwrap();
        assert_eq!(body.prompt.as_deref(), Some("a fox"));
        assert_eq!(body.steps, Some(3));
        let err = parse_body::<GenerateBody>(br#"{"steps": "many"}"#).unwrap_err();
        assert_eq!(err.status.as_u16(), 422);
        assert!(err.detail.contains("steps"), "{}", err.detail);
        let err = parse_body::<GenerateBody>(b"{not json").unwrap_err();
        assert_eq!(err.status.as_u16(), 422);
    }

    #[test]
    fn infotext_parses_back_into_a1111_fields() {
        let text = Parameters {
            prompt: "a fox, <lora:x:0.5>\nsecond line".into(),
            negative_prompt: "blurry".into(),
            steps: 3,
            sampler: "Euler a".into(),
            cfg_scale: 7.5,
            seed: 42,
            width: 64,
            height: 32,
            model_hash: Some("0123456789".into()),
            model: Some("my, model".into()),
            clip_skip: 2,
            denoising_strength: Some(0.5),
            hires: None,
            lora_hashes: vec![("x".into(), "abcdef123456".into())],
            ti_hashes: Vec::new(),
            schedule_type: None,
            rng: None,
            unet_weights: None,
            vae: None,
            safety_flagged: None,
        }
        .to_text();
        let fields = parse_infotext(&text);
        assert_eq!(fields["Prompt"], "a fox, <lora:x:0.5>\nsecond line");
        assert_eq!(fields["Negative prompt"], "blurry");
        assert_eq!(fields["Steps"], "3");
        assert_eq!(fields["Sampler"], "Euler a");
        assert_eq!(fields["Seed"], "42");
        assert_eq!(fields["Size-1"], "64");
        assert_eq!(fields["Size-2"], "32");
        assert_eq!(fields["Model"], "my, model");
        assert_eq!(fields["Lora hashes"], "x: abcdef123456");
        assert_eq!(fields["Denoising strength"], "0.5");
    }

    #[test]
    fn info_json_has_what_clients_read() {
        let infotexts = vec!["a".to_string(), "b".to_string()];
        let info = Info {
            prompt: "p",
            negative_prompt: "",
            seeds: &[7, 8],
            width: 64,
            height: 64,
            sampler_name: "Euler a",
            cfg_scale: 7.0,
            steps: 3,
            batch_size: 2,
            clip_skip: 1,
            model_name: "tiny-sd",
            model_hash: "0123456789",
            denoising_strength: None,
            infotexts: &infotexts,
            job_timestamp: "20261207000000",
        };
        let value: Value = serde_json::from_str(&info.to_json()).unwrap();
        assert_eq!(value["seed"], 7);
        assert_eq!(value["all_seeds"], json!([7, 8]));
        assert_eq!(value["infotexts"], json!(["a", "b"]));
        assert_eq!(value["sampler_name"], "Euler a");
    }
}
