//! `sd generate`: load, generate, write PNGs with their parameters.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use sd_core::{Backend, Error, Result};
use stable_diffusion::core::pipeline::check_batch_size;
use stable_diffusion::core::weights::UnetWeights;
use stable_diffusion::image_file::{fit_init, read_gray, read_rgb};
use stable_diffusion::lora::{LoraFileReport, LoraSpec, find_in_dir, take_prompt_loras};
use stable_diffusion::model_hash::{lora_hash, short_hash};
use stable_diffusion::output;
use stable_diffusion::parameters::Parameters;
use stable_diffusion::png::write_png;
use stable_diffusion::preview::{PreviewMethod, Previewer};
use stable_diffusion::schedulers::{ScheduleType, SchedulerConfig, infotext_names, parse_override};
use stable_diffusion::{
    GenerationRequest, LoadOptions, PromptMode, SafetyCheckerChoice, StableDiffusion,
};

use crate::backend::with_backend;
use crate::cli::GenerateArgs;
use crate::progress::StepBar;

/// The committed tiny pipeline, run when no --model is given (so a fresh clone works). Only a
/// source checkout has it: the published crate leaves fixtures/ out, so an `sd` installed with
/// `cargo install` finds nothing here.
pub(crate) fn bundled_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("tiny-sd")
}

/// The model to load: `--model` when given, else the bundled tiny model if it is there, else an
/// [`Error::InvalidArgument`] for `--model` that says what to pass (rather than the I/O error
/// loading a missing folder would give).
pub(crate) fn resolve_model(model: Option<&Path>, bundled: &Path) -> Result<PathBuf> {
    match model {
        Some(path) => Ok(path.to_path_buf()),
        None if bundled.is_dir() => Ok(bundled.to_path_buf()),
        None => Err(Error::invalid_argument(
            "--model",
            format!(
                "no model given, and the bundled tiny test model ({}) is not there: it comes \
                 only with a source checkout of sd-rs. Pass --model PATH: an SD 1.5 \
                 .safetensors file or a diffusers folder",
                bundled.display()
            ),
        )),
    }
}

pub fn run(args: Box<GenerateArgs>) -> Result<()> {
    with_backend!(args.backend, args.precision, |backend| generate(
        backend, &args
    ))
}

fn generate<B: Backend>(backend: B, args: &GenerateArgs) -> Result<()> {
    if args.scheduler.as_deref().map(str::trim) == Some("help") {
        print!("{}", scheduler_help());
        return Ok(());
    }
    let say = |message: String| {
        if !args.quiet {
            eprintln!("{message}");
        }
    };
    let model_path = resolve_model(args.model.as_deref(), &bundled_model())?;
    if args.model.is_none() {
        say(format!(
            "No --model given: running the bundled tiny test model {} (random weights, so the \
             image is noise). Pass --model PATH for a real checkpoint.",
            model_path.display()
        ));
    }
    // Check names, the outputs and the inputs before the (slow) model load so mistakes fail at
    // once.
    if let Some(name) = &args.scheduler {
        stable_diffusion::schedulers::kind_of(name)?;
    }
    if let Some(schedule_type) = &args.schedule_type {
        ScheduleType::parse(schedule_type)?;
    }
    let config_overrides = scheduler_config_overrides(args)?;
    check_batch_size(args.batch)?;
    let hires = args.hires.fix()?;
    let init = args.init_image.as_ref().map(read_rgb).transpose()?;
    let mask = args.mask.as_ref().map(read_gray).transpose()?;
    // A1111 blurs the mask at its own size, then resizes it with the image.
    let mask = mask.map(|mask| mask.gaussian_blur(args.mask_blur, args.mask_blur));
    // A1111's resize_mode 0: an init image of another size is stretched to --width/--height.
    let (init, mask) = match init {
        Some(image) => {
            let (image, mask) = fit_init(image, mask, args.width, args.height)?;
            (Some(image), mask)
        }
        None => (None, mask),
    };
    let (prompt, loras) = loras_of(args)?;
    let outputs = output::image_paths(&args.output, args.batch);
    let inputs: Vec<PathBuf> = [Some(&model_path), args.config_dir.as_ref()]
        .into_iter()
        .chain([args.init_image.as_ref(), args.mask.as_ref()])
        .chain([args.vae.as_ref(), args.safety_checker.as_ref()])
        .flatten()
        .cloned()
        .chain(loras.iter().map(|spec| spec.path.clone()))
        .collect();
    output::check_outputs(&outputs, &inputs)?;
    let preview = match args.preview_every {
        0 => None,
        _ => PreviewMethod::parse(&args.preview)?,
    };

    // A1111's infotext names each LoRA by its file stem and short hash.
    // A1111 records a --vae file by name and short hash (a folder: its weight files' hash).
    let vae_info = args
        .vae
        .as_ref()
        .map(|path| -> Result<(String, String)> {
            let files = if path.is_dir() {
                sd_core::weights::diffusers::component_files(path)?
            } else {
                vec![path.clone()]
            };
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            Ok((name.into_owned(), short_hash(&files)?))
        })
        .transpose()?;
    let lora_hashes = loras
        .iter()
        .map(|spec| {
            let name = spec.path.file_stem().unwrap_or_default();
            Ok((name.to_string_lossy().into_owned(), lora_hash(&spec.path)?))
        })
        .collect::<Result<Vec<_>>>()?;
    // One generation per process: each model needs to be held only while it runs.
    let options = LoadOptions {
        config_dir: args.config_dir.clone(),
        low_memory: true,
        loras,
        embeddings: args.embeddings.files.clone(),
        embedding_dirs: args.embeddings.dir.iter().cloned().collect(),
        safety_checker: safety_checker_of(args),
        taesd_decoder: args.vae_decoder.as_deref().map(taesd_path).transpose()?,
        vae: args.vae.clone(),
        ..LoadOptions::default()
    }
    .ema(args.ema);
    say(format!(
        "Loading {} on {} …",
        model_path.display(),
        backend.name()
    ));
    let sd = StableDiffusion::load_on(backend, &model_path, options)?;
    if let Some(weights) = sd.unet_weights() {
        say(format!(
            "UNet weights: {weights} (the checkpoint has both sets; {})",
            match weights {
                UnetWeights::NonEma => "--ema uses the EMA copies",
                UnetWeights::Ema => "without --ema, the trained weights diffusers and A1111 use",
            }
        ));
    }
    if args.scheduler.is_none()
        && let Some(class) = &sd.scheduler_config().class_name
        && class != sd.default_scheduler()
    {
        say(format!(
            "The model's scheduler config names {class}, which sd-rs does not implement: using \
             {} (choose one with --scheduler)",
            sd.default_scheduler()
        ));
    }
    for LoraFileReport {
        path,
        applied,
        skipped,
    } in &sd.lora_report().files
    {
        let skipped = match skipped.len() {
            0 => String::new(),
            n => format!(
                "; skipped {n} keys that fit no module of this model (first: {})",
                skipped[0]
            ),
        };
        say(format!(
            "LoRA {}: {applied} modules{skipped}",
            path.display()
        ));
    }

    for (path, error) in sd.skipped_embeddings() {
        say(format!("Embedding {} skipped: {error}", path.display()));
    }

    let first_seed = args.seed.unwrap_or_else(random_seed);
    let seeds: Vec<u64> = (0..args.batch as u64)
        .map(|i| first_seed.wrapping_add(i))
        .collect();
    let mut request = GenerationRequest::new(prompt)
        .negative_prompt(&args.negative_prompt)
        .steps(args.steps)
        .guidance_scale(args.cfg)
        .clip_skip(args.clip_skip)
        .prompt_mode(if args.plain_prompt {
            PromptMode::Plain
        } else {
            PromptMode::A1111
        })
        .seeds(seeds)
        .rng(args.rng.into());
    if let Some(name) = &args.scheduler {
        request = request.scheduler(name);
    }
    if let Some(schedule_type) = &args.schedule_type {
        request = request.schedule_type(schedule_type);
    }
    request.sampler.config_overrides = config_overrides;
    request.sampler.eta = args.eta;
    request.width = args.width;
    request.height = args.height;
    let strength = init.as_ref().map(|_| args.strength);
    if let Some(image) = init {
        request = request.init_image(image, args.strength);
    }
    if let Some(mask) = mask {
        request = request.mask(mask).masked_content(args.masked_content);
    }
    request.hires = hires;

    // A1111's infotext names each embedding the prompts use by its name and short hash.
    let ti_hashes = sd.embedding_hashes(&request)?;

    let previewer = preview
        .map(|method| Previewer::load(sd.pipeline().backend(), &method))
        .transpose()?;
    let bar = StepBar::new(args.quiet);
    let mut preview_error = None;
    let generation = sd.generate_with_progress(&request, |progress| {
        if let Some(previewer) = &previewer
            && progress.step % args.preview_every == 0
            && let Err(e) = write_previews(&sd, previewer, progress, &args.preview_file)
        {
            // A failed preview stops the run: the user asked for them.
            preview_error = Some(e);
            return stable_diffusion::Control::Cancel;
        }
        bar.update(progress)
    });
    bar.finish();
    if let Some(e) = preview_error {
        return Err(e);
    }
    let generation = generation?;
    if let Some(warning) =
        f32_decode_warning(&generation.decoded_in_f32, &sd.pipeline().backend().name())
    {
        // Even with --quiet: the precision asked for was not the one that made these images.
        eprintln!("{warning}");
    }

    let (sampler, schedule_type) = infotext_names(
        sd.scheduler_for(&request),
        args.schedule_type
            .as_deref()
            .map(ScheduleType::parse)
            .transpose()?,
    )?;
    let model_hash = short_hash(sd.weight_files())?;
    let model_name = model_path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned());
    let first_pass_size = request.hires.as_ref().map(|_| {
        let (width, height) = sd.pipeline().default_size();
        (
            request.width.unwrap_or(width),
            request.height.unwrap_or(height),
        )
    });
    let written = generation
        .images
        .iter()
        .zip(&generation.seeds)
        .zip(&outputs)
        .enumerate();
    for (index, ((image, seed), path)) in written {
        let flagged = generation.safety_flags.as_ref().map(|flags| flags[index]);
        let parameters = Parameters {
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone(),
            steps: args.steps,
            sampler: sampler.clone(),
            schedule_type: schedule_type.map(str::to_string),
            cfg_scale: args.cfg,
            seed: *seed,
            // With a hires fix A1111 writes the first pass's size (and the hires entries).
            width: first_pass_size.map_or(image.width(), |(w, _)| w),
            height: first_pass_size.map_or(image.height(), |(_, h)| h),
            model_hash: Some(model_hash.clone()),
            model: model_name.clone(),
            clip_skip: sd.clip_skip_for(&request),
            denoising_strength: strength.or(request.hires.as_ref().map(|h| h.denoising_strength)),
            hires: request.hires.clone(),
            lora_hashes: lora_hashes.clone(),
            ti_hashes: ti_hashes.clone(),
            rng: Some(request.rng.a1111_name().to_string()),
            unet_weights: sd.unet_weights(),
            vae: vae_info.clone(),
            safety_flagged: flagged,
        };
        write_png(path, image, Some(&parameters.to_text()))?;
        say(format!("Wrote {} (seed {seed})", path.display()));
        if flagged == Some(true) {
            // A warning even with --quiet: the image is not what was asked for.
            eprintln!(
                "warning: the safety checker flagged image {} (seed {seed}); {} is black. \
                 Try another prompt or seed, or pass --no-safety-checker.",
                index + 1,
                path.display()
            );
        }
    }
    Ok(())
}

/// The one line that says which images were decoded again in f32 (none: no line).
fn f32_decode_warning(rows: &[usize], backend: &str) -> Option<String> {
    let (last, rest) = rows.split_last()?;
    let which = match rest {
        [] => format!("image {}", last + 1),
        _ => format!(
            "images {}",
            rows.iter()
                .map(|row| (row + 1).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Some(format!(
        "warning: the VAE decode of {which} on {backend} gave NaN or infinite pixels (the VAE \
         overflows in reduced precision); decoded again in f32. --precision f32 avoids the retry."
    ))
}

/// `--scheduler help`: every accepted name, grouped by vocabulary.
fn scheduler_help() -> String {
    use stable_diffusion::schedulers::{a1111_menu, diffusers_names};
    let (samplers, schedule_types) = a1111_menu();
    let mut text = String::from(
        "A1111 samplers (A1111's algorithms and σ schedules; aliases in brackets; add a\n\
         schedule type to the name, \"DPM++ 2M Karras\", or pass --schedule-type; DDIM, PLMS\n\
         and UniPC take none):\n",
    );
    for sampler in &samplers {
        let default = sampler
            .default_scheduler
            .map_or(String::new(), |d| format!(", Automatic = {d}"));
        text += &format!(
            "  {} [{}{default}]\n",
            sampler.name,
            sampler.aliases.join(", ")
        );
    }
    text += "A1111 schedule types (--schedule-type):\n";
    for kind in &schedule_types {
        let aliases = std::iter::once(kind.name)
            .chain(kind.aliases.iter().copied())
            .collect::<Vec<_>>()
            .join(", ");
        text += &format!("  {} [{aliases}]\n", kind.label);
    }
    text +=
        "diffusers schedulers (class names and short names, from the model's scheduler config):\n";
    for name in diffusers_names() {
        text += &format!("  {name}\n");
    }
    text
}

/// One preview per image of the batch, to `file` (numbered as the outputs for a batch).
fn write_previews<B: Backend>(
    sd: &StableDiffusion<B>,
    previewer: &Previewer<B>,
    progress: &stable_diffusion::StepProgress<'_>,
    file: &Path,
) -> Result<()> {
    let batch = progress.latents.shape()[0];
    for index in 0..batch {
        let image = previewer.render(sd.pipeline().backend(), progress.latents, index)?;
        write_png(&output::image_paths(file, batch)[index], &image, None)?;
    }
    Ok(())
}

/// The file or folder of `--vae-decoder taesd:PATH`.
fn taesd_path(value: &str) -> Result<PathBuf> {
    match value.split_once(':') {
        Some(("taesd", path)) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Error::invalid_argument(
            "--vae-decoder",
            format!("{value:?}: expected taesd:PATH (a TAESD folder or .safetensors file)"),
        )),
    }
}

/// `--no-safety-checker` / `--safety-checker PATH`, else the model's own checker.
/// `--scheduler-config KEY=VALUE` as pairs, checked against SD 1.5's config (keys and value
/// types) before the model loads.
fn scheduler_config_overrides(args: &GenerateArgs) -> Result<Vec<(String, String)>> {
    let overrides = args
        .scheduler_config
        .iter()
        .map(|text| parse_override(text))
        .collect::<Result<Vec<_>>>()?;
    SchedulerConfig::sd15().with_overrides(&overrides)?;
    Ok(overrides)
}

fn safety_checker_of(args: &GenerateArgs) -> SafetyCheckerChoice {
    match (&args.safety_checker, args.no_safety_checker) {
        (_, true) => SafetyCheckerChoice::Off,
        (Some(path), false) => SafetyCheckerChoice::File(path.clone()),
        (None, false) => SafetyCheckerChoice::FromModel,
    }
}

/// The prompt without its `<lora:…>` tags, and the LoRA files to apply: those of `--lora`, then
/// those the tags name in `--lora-dir`.
fn loras_of(args: &GenerateArgs) -> Result<(String, Vec<LoraSpec>)> {
    let mut loras = args
        .lora
        .iter()
        .map(|text| LoraSpec::parse(text))
        .collect::<Result<Vec<_>>>()?;
    let (prompt, tags) = take_prompt_loras(&args.prompt)?;
    match (&args.lora_dir, tags.is_empty()) {
        (_, true) => {}
        (None, false) => {
            return Err(Error::invalid_argument(
                "--lora-dir",
                format!(
                    "the prompt has <lora:{}:…> tags: pass --lora-dir DIR, the folder of the LoRA files",
                    tags[0].name
                ),
            ));
        }
        (Some(dir), false) => {
            for tag in tags {
                loras.push(LoraSpec {
                    path: find_in_dir(dir, &tag.name)?,
                    text_encoder: tag.text_encoder,
                    unet: tag.unet,
                });
            }
        }
    }
    Ok((prompt, loras))
}

/// A seed in A1111's usual 32-bit range (torch seeds its generator with the low 32 bits).
fn random_seed() -> u64 {
    let hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.finish() & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_model_is_there_in_a_source_checkout() {
        let bundled = bundled_model();
        assert_eq!(resolve_model(None, &bundled).ok(), Some(bundled));
    }

    #[test]
    fn a_given_model_wins_over_the_bundled_one() {
        let given = Path::new("v1-5-pruned-emaonly.safetensors");
        let resolved = resolve_model(Some(given), &bundled_model()).ok();
        assert_eq!(resolved.as_deref(), Some(given));
    }

    /// What an installed binary (no fixtures/ next to its sources) says without --model.
    #[test]
    fn without_the_bundled_model_the_error_says_to_pass_one() {
        let absent = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-fixtures/tiny-sd");
        match resolve_model(None, &absent) {
            Err(Error::InvalidArgument { name, reason }) => {
                assert_eq!(name, "--model");
                for needle in ["--model PATH", ".safetensors", "diffusers folder"] {
                    assert!(reason.contains(needle), "`{needle}` missing from: {reason}");
                }
                assert!(reason.contains(&absent.display().to_string()), "{reason}");
            }
            other => panic!("expected an invalid --model argument, got {other:?}"),
        }
    }
}
