//! `sd generate --hires-*`: A1111's hires fix from the command line.

use clap::Args;
use sd_core::{Error, Result};
use stable_diffusion::{HiresFix, LatentUpscaler};

/// The hires fix (txt2img): a first pass at --width/--height, its latents resized, then a
/// second pass at the larger size. On with --hires-scale or --hires-resize.
#[derive(Debug, Args)]
pub struct HiresArgs {
    /// Hires fix: scale both sides of the first pass by F (A1111's "Upscale by").
    #[arg(long, value_name = "F", group = "hires_target")]
    pub hires_scale: Option<f64>,
    /// Hires fix: resize to WxH pixels (a side of 0 keeps the aspect ratio; with both sides
    /// and another aspect ratio the latents are cropped to fit, as A1111 does).
    #[arg(long, value_name = "WxH", group = "hires_target")]
    pub hires_resize: Option<String>,
    /// Steps of the hires pass (0: --steps); they are the last N steps of a schedule of
    /// N / --hires-denoise steps, as A1111 runs them.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "hires_target")]
    pub hires_steps: usize,
    /// Denoising strength of the hires pass, in (0, 1].
    #[arg(
        long,
        value_name = "F",
        default_value_t = 0.7,
        requires = "hires_target"
    )]
    pub hires_denoise: f64,
    /// How latents are resized: one of A1111's latent upscalers, "Latent" (bilinear), "Latent
    /// (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
    /// "Latent (nearest-exact)".
    #[arg(
        long,
        value_name = "NAME",
        default_value = "Latent",
        requires = "hires_target"
    )]
    pub hires_upscaler: String,
}

impl HiresArgs {
    /// The request's hires fix; `None` when neither --hires-scale nor --hires-resize is given.
    pub fn fix(&self) -> Result<Option<HiresFix>> {
        let fix = match (self.hires_scale, &self.hires_resize) {
            (Some(scale), _) => HiresFix::scale(scale),
            (None, Some(size)) => {
                let (width, height) = parse_size(size)?;
                HiresFix::resize(width, height)
            }
            (None, None) => return Ok(None),
        };
        let upscaler: LatentUpscaler = self.hires_upscaler.parse().map_err(|_| {
            Error::invalid_argument(
                "--hires-upscaler",
                format!(
                    "{:?} is not a latent upscaler; choose one of {}",
                    self.hires_upscaler,
                    LatentUpscaler::ALL
                        .map(|m| format!("{:?}", m.a1111_name()))
                        .join(", ")
                ),
            )
        })?;
        Ok(Some(
            fix.steps(self.hires_steps)
                .denoising_strength(self.hires_denoise)
                .upscaler(upscaler),
        ))
    }
}

/// `WxH` (a side may be 0).
fn parse_size(text: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::invalid_argument(
            "--hires-resize",
            format!("expected WIDTHxHEIGHT such as 1024x768, got {text:?}"),
        )
    };
    let (width, height) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |s: &str| s.trim().parse::<usize>().map_err(|_| bad());
    Ok((side(width)?, side(height)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_name_the_flag() {
        assert_eq!(parse_size("1024x768").unwrap(), (1024, 768));
        assert_eq!(parse_size("0X640").unwrap(), (0, 640));
        let err = parse_size("1024").unwrap_err().to_string();
        assert!(err.contains("--hires-resize"), "{err}");
    }
}
