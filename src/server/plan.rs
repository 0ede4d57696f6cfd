//! An A1111 txt2img/img2img body checked against the server's limits and turned into the
//! library's [`GenerationRequest`]s: one per `n_iter` iteration, each a batch of `batch_size`
//! images with a seed each (`seed`, `seed + 1`, …, as A1111 numbers them), so image *i* is the
//! image `sd generate --seed (seed + i)` makes.

use std::path::Path;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sd_core::pipeline::{GrayImage, MaskedContent, RgbImage, SamplerSettings};
use serde_json::Value;

use super::a1111::{
    DEFAULT_CFG_SCALE, DEFAULT_DENOISING_STRENGTH, DEFAULT_HR_SCALE, DEFAULT_INPAINTING_FILL,
    DEFAULT_MASK_BLUR, DEFAULT_SAMPLER, DEFAULT_SIDE, DEFAULT_STEPS, GenerateBody, truthy,
};
use super::catalog::find_lora;
use super::error::ApiError;
use crate::image_file::{decode_gray, decode_rgb};
use crate::lora::{LoraSpec, take_prompt_loras};
use crate::{GenerationRequest, HiresFix, LatentUpscaler, PromptMode};

/// What one server accepts (flags of `sd serve`; defaults generous for one machine).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request bodies larger than this are refused (413) before they are read.
    pub max_body_bytes: usize,
    /// Largest image width or height.
    pub max_side: usize,
    pub max_steps: usize,
    /// Largest `batch_size × n_iter`.
    pub max_images: usize,
    /// Requests waiting behind the running one; one more is answered 503 at once.
    pub max_queue: usize,
    /// Largest init image or mask, in pixels, checked from its header before decoding.
    pub max_image_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            max_side: 2048,
            max_steps: 150,
            max_images: 16,
            max_queue: 16,
            max_image_pixels: crate::image_file::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Which endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Txt2Img,
    Img2Img,
}

/// A checked request, ready for the worker.
#[derive(Debug)]
pub struct Plan {
    /// One request per iteration (`n_iter`), `batch_size` seeds each.
    pub iterations: Vec<GenerationRequest>,
    /// LoRA files from the prompt's `<lora:…>` tags, with their names for the infotext.
    pub loras: Vec<(String, LoraSpec)>,
    /// `override_settings.sd_model_checkpoint`: this request's model, else the current one.
    pub checkpoint: Option<String>,
    /// The prompt as sent (tags included, as A1111's infotext keeps them).
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub cfg_scale: f32,
    pub width: usize,
    pub height: usize,
    pub batch_size: usize,
    /// img2img and the hires fix only.
    pub denoising_strength: Option<f64>,
    pub send_images: bool,
}

impl Plan {
    /// Give every iteration that names a diffusers scheduler class the server's
    /// `--scheduler-config` overrides (A1111's sampler names have no scheduler config to change).
    pub fn apply_scheduler_config(&mut self, overrides: &[(String, String)]) {
        for request in &mut self.iterations {
            let sampler = &mut request.sampler;
            let names_a_class = sampler
                .name
                .as_deref()
                .and_then(|name| crate::schedulers::kind_of(name).ok())
                .is_some_and(|kind| !kind.is_a1111());
            if names_a_class {
                sampler.config_overrides = overrides.to_vec();
            }
        }
    }
}

#[cfg(test)]
impl Plan {
    /// Every image's seed, in order.
    pub fn seeds(&self) -> Vec<u64> {
        self.iterations
            .iter()
            .flat_map(GenerationRequest::image_seeds)
            .collect()
    }
}

/// Check `body` and build its plan. `clip_skip` is the server's current
/// `CLIP_stop_at_last_layers` (a request's `override_settings` wins).
pub fn plan(
    body: GenerateBody,
    mode: Mode,
    limits: &Limits,
    clip_skip: usize,
    lora_dir: Option<&Path>,
) -> Result<Plan, ApiError> {
    refuse_unsupported(&body, mode)?;
    let steps = in_range(
        "steps",
        body.steps.unwrap_or(DEFAULT_STEPS),
        1,
        limits.max_steps,
    )?;
    let width = in_range(
        "width",
        body.width.unwrap_or(DEFAULT_SIDE),
        1,
        limits.max_side,
    )?;
    let height = in_range(
        "height",
        body.height.unwrap_or(DEFAULT_SIDE),
        1,
        limits.max_side,
    )?;
    let batch_size = in_range(
        "batch_size",
        body.batch_size.unwrap_or(1),
        1,
        limits.max_images,
    )?;
    let n_iter = in_range("n_iter", body.n_iter.unwrap_or(1), 1, limits.max_images)?;
    if batch_size * n_iter > limits.max_images {
        return Err(ApiError::unprocessable(format!(
            "batch_size × n_iter = {} is more than the {} images this server makes per request",
            batch_size * n_iter,
            limits.max_images
        )));
    }
    let cfg_scale = body.cfg_scale.unwrap_or(DEFAULT_CFG_SCALE);
    if !cfg_scale.is_finite() || cfg_scale.abs() > 100.0 {
        return Err(ApiError::unprocessable(format!(
            "cfg_scale: must be a number in [-100, 100], got {cfg_scale}"
        )));
    }
    let override_settings = body.override_settings.clone().unwrap_or_default();
    let clip_skip = match override_settings.get("CLIP_stop_at_last_layers") {
        None | Some(Value::Null) => clip_skip,
        Some(value) => clip_skip_of(value)?,
    };
    let checkpoint = match override_settings.get("sd_model_checkpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "override_settings.sd_model_checkpoint: expected a model title, found {other}"
            )));
        }
    };
    let sampler = sampler_of(&body)?;

    let prompt = body.prompt.clone().unwrap_or_default();
    let negative_prompt = body.negative_prompt.clone().unwrap_or_default();
    let (stripped, tags) = take_prompt_loras(&prompt)?;
    let loras = tags
        .into_iter()
        .map(|tag| {
            let path = find_lora(lora_dir, &tag.name)?;
            Ok((
                tag.name,
                LoraSpec {
                    path,
                    text_encoder: tag.text_encoder,
                    unet: tag.unet,
                },
            ))
        })
        .collect::<sd_core::Result<Vec<_>>>()?;

    let mut template = GenerationRequest::new(stripped)
        .negative_prompt(negative_prompt.clone())
        .steps(steps)
        .guidance_scale(cfg_scale as f32)
        .clip_skip(clip_skip)
        .prompt_mode(PromptMode::A1111)
        .size(width, height);
    template.sampler = sampler;
    if let Some(eta) = body.eta {
        template = template.eta(eta as f32);
    }
    let mut denoising_strength = None;
    if mode == Mode::Txt2Img && body.enable_hr == Some(true) {
        let hires = hires_of(&body, width, height, limits)?;
        denoising_strength = Some(hires.denoising_strength);
        template = template.hires(hires);
    }
    // The requests one iteration makes: one, or one per init image.
    let mut parts = vec![template];
    let mut batch_size = batch_size;
    if mode == Mode::Img2Img {
        let strength = body
            .denoising_strength
            .unwrap_or(DEFAULT_DENOISING_STRENGTH);
        if !(0.0..=1.0).contains(&strength) {
            return Err(ApiError::unprocessable(format!(
                "denoising_strength: must be in [0, 1], got {strength}"
            )));
        }
        let (images, mask) = init_images(&body, width, height, limits.max_image_pixels)?;
        // A1111: one image serves the whole batch; several make the batch, one image each,
        // and may not outnumber it.
        if images.len() > batch_size {
            return Err(ApiError::unprocessable(format!(
                "bad number of images passed: {}; expecting {batch_size} or less",
                images.len()
            )));
        }
        if images.len() > 1 {
            batch_size = images.len();
        }
        let masked_content = masked_content_of(&body)?;
        parts = images
            .into_iter()
            .map(|image| {
                let mut part = parts[0].clone().init_image(image, strength);
                if let Some(mask) = &mask {
                    part = part.mask(mask.clone()).masked_content(masked_content);
                }
                part
            })
            .collect();
        denoising_strength = Some(strength);
    }

    let first_seed = match body.seed {
        Some(seed) if seed >= 0 => seed as u64,
        _ => random_seed(),
    };
    // Seeds run on over the batch and the iterations; with one request per init image each
    // image of the batch is its own generation (its seed alone gives it, as in a batch).
    let rows = batch_size / parts.len();
    let iterations = (0..n_iter)
        .flat_map(|iteration| {
            parts.iter().enumerate().map(move |(part_no, part)| {
                let first = iteration * batch_size + part_no * rows;
                let seeds = (first..first + rows)
                    .map(|i| first_seed.wrapping_add(i as u64))
                    .collect();
                part.clone().seeds(seeds)
            })
        })
        .collect();
    Ok(Plan {
        iterations,
        loras,
        checkpoint,
        prompt,
        negative_prompt,
        steps,
        cfg_scale: cfg_scale as f32,
        width,
        height,
        batch_size,
        denoising_strength,
        send_images: body.send_images.unwrap_or(true),
    })
}

/// A1111 features this server does not have: refused when asked for (a silently different
/// image would be worse), accepted at their "off" values, which clients send by default.
fn refuse_unsupported(body: &GenerateBody, mode: Mode) -> Result<(), ApiError> {
    let refuse = |field: &str, why: &str| {
        Err(ApiError::unprocessable(format!(
            "{field}: {why} (not supported by this server)"
        )))
    };
    if body.enable_hr == Some(true) && mode == Mode::Txt2Img {
        refuse_hires_variants(body)?;
    }
    if body.restore_faces == Some(true) {
        return refuse("restore_faces", "face restoration");
    }
    if body.tiling == Some(true) {
        return refuse("tiling", "tiling");
    }
    if body.subseed_strength.is_some_and(|s| s != 0.0) {
        return refuse("subseed_strength", "variation seeds");
    }
    if body.script_name.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unprocessable(format!(
            "Script '{}' not found",
            body.script_name.as_deref().unwrap_or_default()
        )));
    }
    if let Some(name) = body.alwayson_scripts.as_ref().and_then(|s| s.keys().next()) {
        return Err(ApiError::unprocessable(format!(
            "always on script {name} not found"
        )));
    }
    if body.styles.as_ref().is_some_and(|s| !s.is_empty()) {
        return refuse("styles", "prompt styles");
    }
    if body.resize_mode.is_some_and(|m| m != 0) {
        return refuse("resize_mode", "only 0 (resize to the requested size)");
    }
    if body.initial_noise_multiplier.is_some_and(|m| m != 1.0) {
        return refuse("initial_noise_multiplier", "only 1");
    }
    Ok(())
}

/// The hires fix of a txt2img body with `enable_hr` (A1111's `hr_*` fields and
/// `denoising_strength`), its size within the server's caps.
fn hires_of(
    body: &GenerateBody,
    width: usize,
    height: usize,
    limits: &Limits,
) -> Result<HiresFix, ApiError> {
    let upscaler = match body.hr_upscaler.as_deref().map(str::trim) {
        None | Some("") => LatentUpscaler::default(),
        Some(name) => name.parse().map_err(|_| {
            let latent: Vec<&str> = LatentUpscaler::ALL.iter().map(|m| m.a1111_name()).collect();
            // A1111's words for a name it does not have; this server has the latent ones only.
            ApiError::unprocessable(format!(
                "hr_upscaler: could not find upscaler named {name} (this server has the latent \
                 upscalers: {})",
                latent.join(", ")
            ))
        })?,
    };
    let resize_x = in_range(
        "hr_resize_x",
        body.hr_resize_x.unwrap_or(0),
        0,
        limits.max_side,
    )?;
    let resize_y = in_range(
        "hr_resize_y",
        body.hr_resize_y.unwrap_or(0),
        0,
        limits.max_side,
    )?;
    let fix = if resize_x == 0 && resize_y == 0 {
        HiresFix::scale(body.hr_scale.unwrap_or(DEFAULT_HR_SCALE))
    } else {
        HiresFix::resize(resize_x, resize_y)
    };
    let steps = in_range(
        "hr_second_pass_steps",
        body.hr_second_pass_steps.unwrap_or(0),
        0,
        limits.max_steps,
    )?;
    let strength = body
        .denoising_strength
        .unwrap_or(DEFAULT_DENOISING_STRENGTH);
    let fix = fix
        .steps(steps)
        .denoising_strength(strength)
        .upscaler(upscaler);
    // Pixel sizes: the sizes with a latent factor of 1.
    let sizes = fix.sizes(width, height, 1).map_err(|e| {
        let field = if resize_x == 0 && resize_y == 0 {
            "hr_scale"
        } else {
            "hr_resize_x/hr_resize_y"
        };
        let field = if e.to_string().contains("denoising") {
            "denoising_strength"
        } else {
            field
        };
        ApiError::unprocessable(format!("{field}: {e}"))
    })?;
    let (to_x, to_y) = sizes.upscaled_latent;
    if to_x.max(to_y) > limits.max_side {
        return Err(ApiError::unprocessable(format!(
            "hr_scale: the hires pass would work at {to_x}×{to_y}, larger than the {} pixels per \
             side this server allows",
            limits.max_side
        )));
    }
    Ok(fix)
}

/// Hires options this server runs only at their "same as the first pass" values.
fn refuse_hires_variants(body: &GenerateBody) -> Result<(), ApiError> {
    let sampler = body.sampler_name.as_deref().unwrap_or_default();
    let prompt = body.prompt.as_deref().unwrap_or_default();
    let negative = body.negative_prompt.as_deref().unwrap_or_default();
    let fields = [
        (
            "hr_checkpoint_name",
            &body.hr_checkpoint_name,
            "Use same checkpoint",
            "",
        ),
        (
            "hr_sampler_name",
            &body.hr_sampler_name,
            "Use same sampler",
            sampler,
        ),
        ("hr_scheduler", &body.hr_scheduler, "Use same scheduler", ""),
        ("hr_prompt", &body.hr_prompt, "", prompt),
        ("hr_negative_prompt", &body.hr_negative_prompt, "", negative),
    ];
    for (field, value, same, first_pass) in fields {
        let value = value.as_deref().map(str::trim).unwrap_or_default();
        if !(value.is_empty() || value == same || value == first_pass) {
            return Err(ApiError::unprocessable(format!(
                "{field}: a hires pass different from the first pass (not supported by this \
                 server; leave it empty)"
            )));
        }
    }
    Ok(())
}

fn in_range(field: &str, value: i64, min: usize, max: usize) -> Result<usize, ApiError> {
    usize::try_from(value)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "{field}: must be in [{min}, {max}] on this server, got {value}"
            ))
        })
}

/// A1111's `CLIP_stop_at_last_layers` (1 = the last layer), in range.
pub fn clip_skip_of(value: &Value) -> Result<usize, ApiError> {
    value
        .as_u64()
        .filter(|v| (1..=12).contains(v))
        .map(|v| v as usize)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "CLIP_stop_at_last_layers: must be an integer in [1, 12], got {value}"
            ))
        })
}

/// The sampler to run, from A1111's `sampler_name` (or `sampler_index`, default "Euler") and
/// `scheduler` (a schedule type: automatic, uniform, karras, exponential, …), resolved as A1111
/// resolves them (`sd_schedulers::resolve_a1111`). An unknown sampler is A1111's 404 "Sampler
/// not found", an unknown schedule type a 404 too; a schedule type for a sampler that takes none
/// is a 422.
fn sampler_of(body: &GenerateBody) -> Result<SamplerSettings, ApiError> {
    let name = [&body.sampler_name, &body.sampler_index]
        .into_iter()
        .flatten()
        .map(|name| name.trim())
        .find(|name| !name.is_empty())
        .unwrap_or(DEFAULT_SAMPLER);
    crate::schedulers::resolve_a1111(name, None)
        .map_err(|_| ApiError::not_found(format!("Sampler not found: {name}")))?;
    let schedule = body
        .scheduler
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if let Some(schedule) = schedule {
        crate::schedulers::ScheduleType::parse(schedule)
            .map_err(|_| ApiError::not_found(format!("Scheduler not found: {schedule}")))?;
    }
    crate::schedulers::resolve_a1111(name, schedule)
        .map_err(|e| ApiError::unprocessable(format!("scheduler: {e}")))
}

/// The init images and mask of an img2img body, decoded, the mask inverted and blurred as
/// asked, all resized to `width`×`height` (A1111's `resize_mode` 0).
fn init_images(
    body: &GenerateBody,
    width: usize,
    height: usize,
    max_pixels: u64,
) -> Result<(Vec<RgbImage>, Option<GrayImage>), ApiError> {
    let sent = body.init_images.as_deref().unwrap_or_default();
    if sent.is_empty() {
        return Err(ApiError::not_found("Init image not found"));
    }
    let images = sent
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let field = format!("init_images[{i}]");
            let image = decode_rgb(&base64_image(text, &field)?, &field, max_pixels)?;
            Ok(crate::image_file::resize_rgb(image, width, height)?)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mask = match body.mask.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(text) => {
            let bytes = base64_image(text, "mask")?;
            let mut mask = decode_gray(&bytes, "mask", max_pixels)?;
            let invert = truthy(body.inpainting_mask_invert.as_ref()).map_err(|e| {
                ApiError::unprocessable(format!("inpainting_mask_invert: {}", e.detail))
            })?;
            if invert {
                let pixels = mask.pixels().iter().map(|p| 255 - p).collect();
                mask = GrayImage::new(mask.width(), mask.height(), pixels)?;
            }
            let (blur_x, blur_y) = mask_blur_of(body)?;
            // At the mask's own size, before it is resized (A1111's order).
            let mask = mask.gaussian_blur(blur_x, blur_y);
            Some(crate::image_file::resize_gray(mask, width, height)?)
        }
    };
    Ok((images, mask))
}

/// The largest mask blur σ taken (A1111's slider ends at 64).
const MAX_MASK_BLUR: i64 = 64;

/// `(mask_blur_x, mask_blur_y)`: `mask_blur` for both when given, else each its own field,
/// else A1111's 4.
fn mask_blur_of(body: &GenerateBody) -> Result<(u32, u32), ApiError> {
    let (x, y) = match body.mask_blur {
        Some(both) => (both, both),
        None => (
            body.mask_blur_x.unwrap_or(DEFAULT_MASK_BLUR),
            body.mask_blur_y.unwrap_or(DEFAULT_MASK_BLUR),
        ),
    };
    let checked = |value: i64| {
        u32::try_from(value)
            .ok()
            .filter(|_| value <= MAX_MASK_BLUR)
            .ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "mask_blur: must be in [0, {MAX_MASK_BLUR}], got {value}"
                ))
            })
    };
    Ok((checked(x)?, checked(y)?))
}

/// A1111's `inpainting_fill` (default 0, fill).
fn masked_content_of(body: &GenerateBody) -> Result<MaskedContent, ApiError> {
    MaskedContent::from_a1111(body.inpainting_fill.unwrap_or(DEFAULT_INPAINTING_FILL))
        .map_err(|e| ApiError::unprocessable(e.to_string()))
}

/// The bytes of a base64 image, with or without a `data:image/…;base64,` prefix (padding and
/// line breaks tolerated, as Python's `b64decode` does).
pub fn base64_image(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, data)| data).ok_or_else(|| {
            ApiError::unprocessable(format!("{field}: a data: URL without a comma"))
        })?,
        None => text,
    };
    if payload.starts_with("http://") || payload.starts_with("https://") {
        return Err(ApiError::unprocessable(format!(
            "{field}: images are taken from the request body only, not fetched from URLs"
        )));
    }
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    LENIENT
        .decode(compact.as_bytes())
        .map_err(|e| ApiError::unprocessable(format!("{field}: not valid base64: {e}")))
}

/// A seed in A1111's 32-bit range for `seed: -1`.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        & 0xFFFF_FFFF
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;
    use crate::Seeds;
    use crate::server::a1111::parse_body;

    fn plan_of(json: &str, mode: Mode) -> Result<Plan, ApiError> {
        plan(
            parse_body(json.as_bytes())?,
            mode,
            &Limits::default(),
            1,
            None,
        )
    }

    #[test]
    fn a1111_defaults_and_seeds_numbered_across_iterations() {
        let plan = plan_of(
            r#"{"prompt": "a fox", "seed": 10, "batch_size": 2, "n_iter": 3}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        assert_eq!(plan.iterations.len(), 3);
        assert_eq!(plan.seeds(), [10, 11, 12, 13, 14, 15]);
        assert_eq!(plan.iterations[1].seeds, Seeds::PerImage(vec![12, 13]));
        let first = &plan.iterations[0];
        assert_eq!(
            (first.steps, first.width, first.height),
            (50, Some(512), Some(512))
        );
        assert_eq!(first.guidance_scale, 7.0);
        assert_eq!(first.sampler.name.as_deref(), Some("Euler"));
        assert_eq!(first.text.clip_skip, Some(1));
        let random = plan_of(r#"{"seed": -1}"#, Mode::Txt2Img).unwrap();
        assert!(random.seeds()[0] <= 0xFFFF_FFFF);
    }

    #[test]
    fn samplers_and_schedules_in_a1111_names() {
        let p = plan_of(
            r#"{"sampler_name": "DPM++ 2M", "scheduler": "Karras"}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        assert_eq!(p.iterations[0].sampler.name.as_deref(), Some("DPM++ 2M"));
        assert_eq!(
            p.iterations[0].sampler.schedule_type.as_deref(),
            Some("Karras")
        );
        let p = plan_of(
            r#"{"sampler_index": "Euler a", "scheduler": "automatic"}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        assert_eq!(p.iterations[0].sampler.name.as_deref(), Some("Euler a"));
        let p = plan_of(
            r#"{"sampler_name": "Euler", "scheduler": "karras"}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        assert_eq!(p.iterations[0].sampler.name.as_deref(), Some("Euler"));
        assert_eq!(
            p.iterations[0].sampler.schedule_type.as_deref(),
            Some("Karras")
        );
        let err = plan_of(r#"{"sampler_name": "Nope"}"#, Mode::Txt2Img).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.detail.as_str()),
            (404, "Sampler not found: Nope")
        );
        let err = plan_of(r#"{"scheduler": "exotic"}"#, Mode::Txt2Img).unwrap_err();
        assert_eq!(err.status.as_u16(), 404);
        // A1111's DDIM (a timestep sampler, no σ schedule) takes no schedule type.
        let err = plan_of(
            r#"{"sampler_name": "DDIM", "scheduler": "karras"}"#,
            Mode::Txt2Img,
        )
        .unwrap_err();
        assert_eq!(err.status.as_u16(), 422);
    }

    #[test]
    fn hires_fields_become_the_requests_hires_fix() {
        use crate::HiresTarget;
        let p = plan_of(
            r#"{"width": 256, "height": 256, "enable_hr": true, "hr_scale": 1.5,
                "hr_second_pass_steps": 7, "hr_upscaler": "Latent (bicubic)",
                "denoising_strength": 0.4, "hr_sampler_name": "Use same sampler",
                "hr_prompt": "", "hr_checkpoint_name": null}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        let fix = p.iterations[0].hires.clone().unwrap();
        assert_eq!(fix.target, HiresTarget::Scale(1.5));
        assert_eq!(
            (fix.steps, fix.denoising_strength, fix.upscaler),
            (7, 0.4, LatentUpscaler::Bicubic)
        );
        assert_eq!(p.denoising_strength, Some(0.4));
        // A1111's defaults: scale 2, "Latent", the first pass's steps, strength 0.75.
        let p = plan_of(r#"{"enable_hr": true, "hr_resize_x": 768}"#, Mode::Txt2Img).unwrap();
        let fix = p.iterations[0].hires.clone().unwrap();
        assert_eq!(
            fix,
            HiresFix::resize(768, 0)
                .denoising_strength(0.75)
                .upscaler(LatentUpscaler::Bilinear)
        );
        // enable_hr false: the hr_ fields clients always send change nothing.
        let p = plan_of(r#"{"enable_hr": false, "hr_scale": 2}"#, Mode::Txt2Img).unwrap();
        assert!(p.iterations[0].hires.is_none());
        assert_eq!(p.denoising_strength, None);
    }

    #[test]
    fn limits_and_unsupported_features_are_422_naming_the_field() {
        for (body, field) in [
            (r#"{"steps": 0}"#, "steps"),
            (r#"{"steps": 151}"#, "steps"),
            (r#"{"width": -64}"#, "width"),
            (r#"{"height": 100000}"#, "height"),
            (r#"{"batch_size": 8, "n_iter": 3}"#, "batch_size × n_iter"),
            (r#"{"cfg_scale": 1e9}"#, "cfg_scale"),
            (
                r#"{"enable_hr": true, "hr_upscaler": "R-ESRGAN 4x+"}"#,
                "could not find upscaler named R-ESRGAN 4x+",
            ),
            (r#"{"enable_hr": true, "hr_scale": 8}"#, "hr_scale"),
            (r#"{"enable_hr": true, "hr_resize_x": 4096}"#, "hr_resize_x"),
            (
                r#"{"enable_hr": true, "denoising_strength": 0}"#,
                "denoising_strength",
            ),
            (
                r#"{"enable_hr": true, "hr_second_pass_steps": -1}"#,
                "hr_second_pass_steps",
            ),
            (
                r#"{"enable_hr": true, "hr_sampler_name": "DDIM"}"#,
                "hr_sampler_name",
            ),
            (r#"{"subseed_strength": 0.5}"#, "subseed_strength"),
            (
                r#"{"alwayson_scripts": {"ControlNet": {"args": []}}}"#,
                "ControlNet",
            ),
            (
                r#"{"override_settings": {"CLIP_stop_at_last_layers": 0}}"#,
                "CLIP_stop_at_last_layers",
            ),
            (r#"{"prompt": "<lora:x:1>"}"#, "--lora-dir"),
        ] {
            let err = plan_of(body, Mode::Txt2Img).unwrap_err();
            assert_eq!(err.status.as_u16(), 422, "{body}: {}", err.detail);
            assert!(err.detail.contains(field), "{body}: {}", err.detail);
        }
        let p = plan_of(
            r#"{"override_settings": {"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "m"}}"#,
            Mode::Txt2Img,
        )
        .unwrap();
        assert_eq!(p.iterations[0].text.clip_skip, Some(2));
        assert_eq!(p.checkpoint.as_deref(), Some("m"));
    }

    fn png_base64(image: &RgbImage) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(crate::png::png_bytes(image, None).unwrap())
    }

    #[test]
    fn img2img_takes_base64_with_or_without_a_data_prefix_and_resizes() {
        let image = RgbImage::new(16, 8, vec![200; 16 * 8 * 3]).unwrap();
        let raw = png_base64(&image);
        for init in [raw.clone(), format!("data:image/png;base64,{raw}")] {
            let body = format!(
                r#"{{"init_images": ["{init}"], "width": 32, "height": 16, "denoising_strength": 0.5}}"#
            );
            let p = plan_of(&body, Mode::Img2Img).unwrap();
            let init = p.iterations[0].init.as_ref().unwrap();
            assert_eq!(
                (init.image.width(), init.image.height(), init.strength),
                (32, 16, 0.5)
            );
        }
        // The mask, inverted: white (repaint) becomes black (keep).
        let white = RgbImage::new(16, 8, vec![255; 16 * 8 * 3]).unwrap();
        let body = format!(
            r#"{{"init_images": ["{raw}"], "mask": "{}", "inpainting_mask_invert": 1, "width": 16, "height": 8}}"#,
            png_base64(&white)
        );
        let p = plan_of(&body, Mode::Img2Img).unwrap();
        assert!(
            p.iterations[0]
                .mask
                .as_ref()
                .unwrap()
                .pixels()
                .iter()
                .all(|&v| v == 0)
        );
    }

    #[test]
    fn several_init_images_make_the_batch_one_image_each_as_a1111() {
        let red = png_base64(&RgbImage::new(8, 8, vec![200; 8 * 8 * 3]).unwrap());
        let blue = png_base64(&RgbImage::new(8, 8, vec![20; 8 * 8 * 3]).unwrap());
        let body = |batch: usize| {
            format!(
                r#"{{"init_images": ["{red}", "{blue}"], "batch_size": {batch}, "n_iter": 2, "seed": 5, "width": 8, "height": 8}}"#
            )
        };
        // More images than the batch: A1111's RuntimeError, here a 422 with its words.
        let err = plan_of(&body(1), Mode::Img2Img).unwrap_err();
        assert_eq!(err.status.as_u16(), 422);
        assert!(
            err.detail
                .contains("bad number of images passed: 2; expecting 1 or less")
        );
        // A batch of 4 with 2 images becomes a batch of 2: image i with seed (5 + i), over two
        // iterations.
        let p = plan_of(&body(4), Mode::Img2Img).unwrap();
        assert_eq!(p.batch_size, 2);
        assert_eq!(p.seeds(), vec![5, 6, 7, 8]);
        let firsts: Vec<u8> = p
            .iterations
            .iter()
            .map(|r| r.init.as_ref().unwrap().image.pixels()[0])
            .collect();
        assert_eq!(firsts, vec![200, 20, 200, 20]);
    }

    #[test]
    fn mask_blur_and_inpainting_fill_take_a1111s_fields_and_defaults() {
        let body = |extra: &str| {
            parse_body::<GenerateBody>(format!("{{\"prompt\": \"x\"{extra}}}").as_bytes()).unwrap()
        };
        assert_eq!(mask_blur_of(&body("")).unwrap(), (4, 4));
        assert_eq!(
            mask_blur_of(&body(r#", "mask_blur_x": 2, "mask_blur_y": 0"#)).unwrap(),
            (2, 0)
        );
        // mask_blur sets both, over the per-axis fields.
        assert_eq!(
            mask_blur_of(&body(r#", "mask_blur": 7, "mask_blur_x": 2"#)).unwrap(),
            (7, 7)
        );
        for bad in [r#", "mask_blur": -1"#, r#", "mask_blur_y": 65"#] {
            let err = mask_blur_of(&body(bad)).unwrap_err();
            assert_eq!(err.status.as_u16(), 422, "{bad}");
            assert!(err.detail.contains("mask_blur"), "{}", err.detail);
        }
        assert_eq!(masked_content_of(&body("")).unwrap(), MaskedContent::Fill);
        assert_eq!(
            masked_content_of(&body(r#", "inpainting_fill": 3"#)).unwrap(),
            MaskedContent::LatentNothing
        );
        let err = masked_content_of(&body(r#", "inpainting_fill": 4"#)).unwrap_err();
        assert!(err.detail.contains("inpainting_fill"), "{}", err.detail);
    }

    #[test]
    fn bad_init_images_are_4xx_naming_the_field() {
        let err = plan_of(r#"{"prompt": "x"}"#, Mode::Img2Img).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.detail.as_str()),
            (404, "Init image not found")
        );
        for (init, needle) in [
            ("!!!not base64!!!", "not valid base64"),
            ("aGVsbG8gd29ybGQ=", "not a readable"),
            ("https://example.com/a.png", "not fetched"),
            ("data:image/png;base64", "comma"),
        ] {
            let body = format!(r#"{{"init_images": ["{init}"]}}"#);
            let err = plan_of(&body, Mode::Img2Img).unwrap_err();
            assert_eq!(err.status.as_u16(), 422, "{init}");
            assert!(
                err.detail.contains("init_images[0]") && err.detail.contains(needle),
                "{}",
                err.detail
            );
        }
    }
}
