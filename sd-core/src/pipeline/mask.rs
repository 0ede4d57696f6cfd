//! AUTOMATIC1111's inpainting mask preparation: the mask blur (`mask_blur`) and what the
//! masked region starts from (`inpainting_fill`, its "Masked content"), as its
//! `StableDiffusionProcessingImg2Img.init` does them (modules/processing.py, masking.py).
//!
//! - [`GrayImage::gaussian_blur`]: OpenCV's 8-bit `GaussianBlur`, bit for bit.
//! - [`MaskedContent`]: `fill` repaints the masked pixels from the colours around them before
//!   encoding ([`RgbImage::fill_masked`]); `latent noise` and `latent nothing` replace the
//!   masked latents (the pipeline's start, `start.rs`); `original` leaves the image alone.

use super::image::{GrayImage, RgbImage};
use crate::error::{Error, Result};

/// What the masked region of an inpainting request starts from (A1111's "Masked content",
/// the API's `inpainting_fill`). Only an ordinary or inpainting UNet with a mask uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskedContent {
    /// `fill` (0): the init image with the masked pixels painted over by ever sharper blurs of
    /// the unmasked ones ([`RgbImage::fill_masked`]); A1111's API default.
    Fill,
    /// `original` (1): the init image as it is; what diffusers does, and the library default.
    #[default]
    Original,
    /// `latent noise` (2): the masked latents replaced by a standard normal draw from the
    /// image's generator: the same draw the start latents are noised with, as A1111 draws both
    /// from the image's seed.
    LatentNoise,
    /// `latent nothing` (3): the masked latents set to zero.
    LatentNothing,
}

impl MaskedContent {
    /// A1111's `inpainting_fill` number.
    pub fn from_a1111(value: i64) -> Result<Self> {
        Ok(match value {
            0 => MaskedContent::Fill,
            1 => MaskedContent::Original,
            2 => MaskedContent::LatentNoise,
            3 => MaskedContent::LatentNothing,
            other => {
                return Err(Error::invalid_argument(
                    "inpainting_fill",
                    format!(
                        "{other}: expected 0 (fill), 1 (original), 2 (latent noise) or 3 \
                         (latent nothing)"
                    ),
                ));
            }
        })
    }

    /// The name A1111 shows (`fill`, `original`, `latent noise`, `latent nothing`).
    pub fn a1111_name(self) -> &'static str {
        match self {
            MaskedContent::Fill => "fill",
            MaskedContent::Original => "original",
            MaskedContent::LatentNoise => "latent noise",
            MaskedContent::LatentNothing => "latent nothing",
        }
    }
}

impl std::str::FromStr for MaskedContent {
    type Err = Error;

    /// A1111's names, with `-` or `_` for the space, or its numbers.
    fn from_str(text: &str) -> Result<Self> {
        let name = text.trim().to_ascii_lowercase().replace(['-', '_'], " ");
        match name.as_str() {
            "fill" | "0" => Ok(MaskedContent::Fill),
            "original" | "1" => Ok(MaskedContent::Original),
            "latent noise" | "2" => Ok(MaskedContent::LatentNoise),
            "latent nothing" | "3" => Ok(MaskedContent::LatentNothing),
            _ => Err(Error::invalid_argument(
                "masked content",
                format!("{text:?}: expected fill, original, latent-noise or latent-nothing"),
            )),
        }
    }
}

/// A1111's `masking.fill` passes: Gaussian radius (σ in pixels, 0 = the pixels themselves) and
/// how many times that blur is composited.
const FILL_PASSES: [(usize, usize); 6] = [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)];

impl RgbImage {
    /// A1111's "fill" for inpainting: the pixels under `mask` (white = masked, grey = partly)
    /// replaced by the colours around them. The unmasked pixels, weighted by how unmasked they
    /// are, are blurred at radii 256, 64, 16, 4, 2 and 0 and composited over each other in that
    /// order (alpha-over, A1111's repeat counts), so each masked pixel ends with the colour of
    /// the nearest unmasked region and each unmasked pixel with its own.
    ///
    /// The blur is three box blurs per axis (as PIL approximates a Gaussian) in f32 with the
    /// edges extended; A1111's PIL arithmetic is not reproduced to the byte.
    pub fn fill_masked(&self, mask: &GrayImage) -> Result<RgbImage> {
        let (w, h) = (self.width, self.height);
        if (mask.width, mask.height) != (w, h) {
            return Err(Error::invalid_argument(
                "mask",
                format!(
                    "{}×{} does not match the image's {w}×{h}",
                    mask.width, mask.height
                ),
            ));
        }
        // Premultiplied: r·a, g·a, b·a, a, with a = how much a pixel is kept.
        let mut kept = vec![[0f32; 4]; w * h];
        for (i, px) in kept.iter_mut().enumerate() {
            let alpha = 1.0 - f32::from(mask.pixels[i]) / 255.0;
            let rgb = &self.pixels[3 * i..3 * i + 3];
            for (channel, &value) in px.iter_mut().zip(rgb) {
                *channel = f32::from(value) * alpha;
            }
            px[3] = alpha;
        }
        // The composite so far, straight colour and alpha (transparent black to begin with).
        let mut out = vec![[0f32; 4]; w * h];
        for (radius, repeats) in FILL_PASSES {
            let blurred = box_gaussian(&kept, w, h, radius);
            for _ in 0..repeats {
                for (dst, src) in out.iter_mut().zip(&blurred) {
                    let src_alpha = src[3];
                    if src_alpha <= 0.0 {
                        continue;
                    }
                    let alpha = src_alpha + dst[3] * (1.0 - src_alpha);
                    for c in 0..3 {
                        // src is premultiplied; dst straight.
                        dst[c] = (src[c] + dst[c] * dst[3] * (1.0 - src_alpha)) / alpha;
                    }
                    dst[3] = alpha;
                }
            }
        }
        let pixels = out
            .iter()
            .flat_map(|px| [px[0], px[1], px[2]])
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        RgbImage::new(w, h, pixels)
    }
}

/// A Gaussian blur of standard deviation `sigma` approximated by three box blurs per axis
/// (edges extended); `sigma` 0 returns the pixels.
fn box_gaussian(pixels: &[[f32; 4]], w: usize, h: usize, sigma: usize) -> Vec<[f32; 4]> {
    if sigma == 0 {
        return pixels.to_vec();
    }
    // Three boxes of width 2r + 1 have variance 3·((2r + 1)² − 1)/12 = r(r + 1).
    let sigma = sigma as f64;
    let radius = ((0.25 + sigma * sigma).sqrt() - 0.5).round().max(1.0) as usize;
    let mut out = pixels.to_vec();
    for _ in 0..3 {
        out = box_pass(&out, w, h, radius, |x, y| y * w + x);
        out = box_pass(&out, h, w, radius, |y, x| y * w + x);
    }
    out
}

/// One running-sum box blur of radius `radius` along an axis of `len` pixels.
fn box_pass(
    pixels: &[[f32; 4]],
    len: usize,
    lines: usize,
    radius: usize,
    at: impl Fn(usize, usize) -> usize,
) -> Vec<[f32; 4]> {
    let mut out = pixels.to_vec();
    let width = (2 * radius + 1) as f32;
    let clamp = |i: isize| i.clamp(0, len as isize - 1) as usize;
    for line in 0..lines {
        let get = |i: isize| pixels[at(clamp(i), line)];
        let mut sum = [0f32; 4];
        for i in -(radius as isize)..=radius as isize {
            let p = get(i);
            for c in 0..4 {
                sum[c] += p[c];
            }
        }
        for i in 0..len {
            let mean = sum.map(|s| s / width);
            out[at(i, line)] = mean;
            let (leaving, entering) = (
                get(i as isize - radius as isize),
                get((i + radius + 1) as isize),
            );
            for c in 0..4 {
                sum[c] += entering[c] - leaving[c];
            }
        }
    }
    out
}

impl GrayImage {
    /// AUTOMATIC1111's mask blur, bit for bit: OpenCV's `GaussianBlur` of an 8-bit image with a
    /// `(2·⌊2.5σ + 0.5⌋ + 1)`-tap kernel of standard deviation σ, first along rows with
    /// `sigma_x`, then along columns with `sigma_y` (a σ of 0 skips that pass), each pass
    /// rounding back to bytes, edges reflected without repeating the edge pixel (OpenCV's
    /// default `BORDER_REFLECT_101`).
    ///
    /// OpenCV filters 8-bit images in fixed point: the weights are rounded to multiples of 1/256
    /// that sum to exactly 1, and each output is
    /// `(Σ weight·pixel + 128) >> 8`. Golden: `tools/fixturegen/mask_blur.py` (cv2 itself).
    pub fn gaussian_blur(&self, sigma_x: u32, sigma_y: u32) -> GrayImage {
        let (w, h) = (self.width, self.height);
        let mut pixels = self.pixels.clone();
        if sigma_x > 0 {
            let kernel = fixed_point_gaussian(sigma_x);
            pixels = blur_pass(&pixels, &kernel, w, h, |x, y| y * w + x);
        }
        if sigma_y > 0 {
            let kernel = fixed_point_gaussian(sigma_y);
            pixels = blur_pass(&pixels, &kernel, h, w, |y, x| y * w + x);
        }
        GrayImage {
            width: w,
            height: h,
            pixels,
        }
    }
}

/// OpenCV's 8-bit Gaussian kernel for σ over A1111's size `n = 2·⌊2.5σ + 0.5⌋ + 1`, in
/// 256ths: the weights `exp(−x²/2σ²)` normalised by their sum (the centre's is 1), then the
/// left half rounded one by one with each rounding error carried into the next weight, mirrored
/// to the right, and the centre set to what makes the sum exactly 256.
fn fixed_point_gaussian(sigma: u32) -> Vec<u32> {
    let sigma = f64::from(sigma);
    let half = (2.5 * sigma + 0.5) as usize;
    let n = 2 * half + 1;
    let left: Vec<f64> = (0..half)
        .map(|i| {
            let x = i as f64 - half as f64;
            (-0.5 / (sigma * sigma) * (x * x)).exp()
        })
        .collect();
    let normaliser = 1.0 / (2.0 * left.iter().sum::<f64>() + 1.0);
    let mut kernel = vec![0u32; n];
    let (mut carried, mut left_sum) = (0.0, 0u32);
    for (i, weight) in left.iter().enumerate() {
        let wanted = weight * normaliser * 256.0 + carried;
        let rounded = wanted.round_ties_even();
        carried = wanted - rounded;
        // Non-negative and at most 256: each weight is a fraction of the total.
        let rounded = rounded as u32;
        kernel[i] = rounded;
        kernel[n - 1 - i] = rounded;
        left_sum += rounded;
    }
    kernel[half] = 256u32.saturating_sub(2 * left_sum);
    kernel
}

/// One 1-D pass of `kernel` (in 256ths) along an axis of `len` pixels, for each of `lines`
/// lines; `at(i, line)` is the index of pixel `i` of `line`.
fn blur_pass(
    pixels: &[u8],
    kernel: &[u32],
    len: usize,
    lines: usize,
    at: impl Fn(usize, usize) -> usize,
) -> Vec<u8> {
    let radius = (kernel.len() / 2) as isize;
    let mut out = pixels.to_vec();
    for line in 0..lines {
        for i in 0..len {
            let sum: u32 = kernel
                .iter()
                .enumerate()
                .map(|(k, weight)| {
                    let source = reflect_101(i as isize + k as isize - radius, len);
                    weight * u32::from(pixels[at(source, line)])
                })
                .sum();
            // At most 255 · 256 + 128 before the shift: a byte after it.
            out[at(i, line)] = ((sum + 128) >> 8) as u8;
        }
    }
    out
}

/// Index `i` folded into `0..len` by reflection about the edge pixels (`-1 → 1`, `len → len −
/// 2`), repeatedly for kernels wider than the image.
fn reflect_101(mut i: isize, len: usize) -> usize {
    let last = len as isize - 1;
    if last == 0 {
        return 0;
    }
    while i < 0 || i > last {
        i = if i < 0 { -i } else { 2 * last - i };
    }
    i as usize
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn blur_kernels_are_opencvs_fixed_point_weights() {
        // cv2's 8-bit weights for A1111's sizes (σ = 1: 7 taps), summing to 256.
        assert_eq!(fixed_point_gaussian(1), vec![1, 14, 62, 102, 62, 14, 1]);
        for sigma in 1..=16 {
            assert_eq!(fixed_point_gaussian(sigma).iter().sum::<u32>(), 256);
        }
    }

    #[test]
    fn mask_blur_keeps_flat_regions_and_softens_edges_symmetrically() {
        // A vertical edge: white left half, black right half, 20 wide.
        let pixels = (0..20 * 3)
            .map(|i| if i % 20 < 10 { 255 } else { 0 })
            .collect();
        let mask = GrayImage::new(20, 3, pixels).unwrap();
        let blurred = mask.gaussian_blur(2, 2);
        let row = &blurred.pixels()[20..40];
        // Far from the edge (radius 5) nothing changes; across it the ramp is symmetric.
        assert_eq!((row[0], row[19]), (255, 0));
        for i in 0..10 {
            assert_eq!(u16::from(row[i]) + u16::from(row[19 - i]), 255, "{row:?}");
        }
        assert!(row[9] > 128 && row[10] < 127);
        // Columns are constant, so the vertical pass changes nothing.
        assert_eq!(blurred, mask.gaussian_blur(2, 0));
        assert_eq!(mask.gaussian_blur(0, 0), mask);
        // A kernel wider than the image reflects repeatedly instead of reading out of bounds.
        let tiny = GrayImage::new(2, 1, vec![0, 255]).unwrap();
        assert_eq!(tiny.gaussian_blur(8, 0).width(), 2);
    }

    #[test]
    fn fill_keeps_unmasked_pixels_and_paints_the_masked_ones_from_their_surroundings() {
        // Left half red and kept, right half green and masked: the fill turns it red.
        let (w, h) = (24, 8);
        let pixels = (0..w * h)
            .flat_map(|i| {
                if i % w < w / 2 {
                    [200, 10, 10]
                } else {
                    [0, 250, 0]
                }
            })
            .collect();
        let image = RgbImage::new(w, h, pixels).unwrap();
        let mask = (0..w * h)
            .map(|i| if i % w < w / 2 { 0 } else { 255 })
            .collect();
        let mask = GrayImage::new(w, h, mask).unwrap();
        let filled = image.fill_masked(&mask).unwrap();
        for (i, (ours, theirs)) in filled
            .pixels()
            .chunks(3)
            .zip(image.pixels().chunks(3))
            .enumerate()
        {
            if i % w < w / 2 {
                assert_eq!(ours, theirs, "kept pixel {i}");
            } else {
                assert_eq!(ours, &[200, 10, 10], "filled pixel {i}");
            }
        }
        // Nothing masked: the image itself.
        let none = GrayImage::new(w, h, vec![0; w * h]).unwrap();
        assert_eq!(image.fill_masked(&none).unwrap(), image);
        assert!(
            image
                .fill_masked(&GrayImage::new(2, 2, vec![0; 4]).unwrap())
                .is_err()
        );
    }

    #[test]
    fn masked_content_reads_a1111_names_and_numbers() {
        assert_eq!(
            "latent-noise".parse::<MaskedContent>().unwrap(),
            MaskedContent::LatentNoise
        );
        assert_eq!(
            "3".parse::<MaskedContent>().unwrap(),
            MaskedContent::LatentNothing
        );
        assert_eq!(MaskedContent::from_a1111(0).unwrap(), MaskedContent::Fill);
        let err = MaskedContent::from_a1111(7).unwrap_err().to_string();
        assert!(
            err.contains("inpainting_fill") && err.contains('7'),
            "{err}"
        );
        assert!("blur".parse::<MaskedContent>().is_err());
    }
}
