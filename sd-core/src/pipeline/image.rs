//! Pixels in and out of the pipeline, converted exactly as diffusers' `VaeImageProcessor` does.
//!
//! - In: 8-bit RGB → `p / 255` in f32 → `2x − 1`, a `[1, 3, h, w]` tensor in `[-1, 1]`.
//! - Masks: grey levels `p / 255 ≥ 0.5` become 1 (repaint), the rest 0 (keep).
//! - Out: `(x · 0.5 + 0.5)` clamped to `[0, 1]`, `· 255`, rounded half to even (NumPy's `round`).
//!
//! Each f32 step is its own rounding, as in torch/NumPy, so the same decoded tensor gives the
//! same bytes.

use ndarray::{ArrayView3, Axis};

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// An 8-bit RGB image, rows top to bottom, pixels `[r, g, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// An 8-bit greyscale image (inpainting masks: white repaints, black keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

fn check_len(what: &str, width: usize, height: usize, channels: usize, len: usize) -> Result<()> {
    let expected = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(channels));
    if width == 0 || height == 0 || expected != Some(len) {
        return Err(Error::invalid_argument(
            what,
            format!("{width}×{height}×{channels} pixels do not fit {len} bytes"),
        ));
    }
    Ok(())
}

impl RgbImage {
    /// An image from `width · height · 3` bytes.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self> {
        check_len("image", width, height, 3, pixels.len())?;
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The bytes, `[r, g, b]` per pixel, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The VAE's input: `[1, 3, h, w]` in `[-1, 1]`.
    pub fn to_tensor(&self) -> HostTensor {
        let (h, w) = (self.height, self.width);
        HostTensor::from_shape_fn(vec![1, 3, h, w], |index| {
            let (c, y, x) = (index[1], index[2], index[3]);
            let unit = f32::from(self.pixels[(y * w + x) * 3 + c]) / 255.0;
            2.0 * unit - 1.0
        })
    }

    /// The image of a decoded `[3, h, w]` tensor in roughly `[-1, 1]`.
    pub fn from_tensor(image: ArrayView3<'_, f32>) -> Self {
        let (h, w) = (image.len_of(Axis(1)), image.len_of(Axis(2)));
        let mut pixels = Vec::with_capacity(h * w * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    pixels.push(to_byte(image[[c, y, x]]));
                }
            }
        }
        Self {
            width: w,
            height: h,
            pixels,
        }
    }
}

/// `[-1, 1]` → a byte, as diffusers' postprocessing and `numpy_to_pil` do.
fn to_byte(value: f32) -> u8 {
    let unit = (value * 0.5 + 0.5).clamp(0.0, 1.0);
    // In [0, 255] after the clamp (NaN clamps to NaN and casts to 0).
    (unit * 255.0).round_ties_even() as u8
}

impl GrayImage {
    /// A mask from `width · height` bytes.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self> {
        check_len("mask", width, height, 1, pixels.len())?;
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// Greyscale as PIL's `convert("L")` computes it (ITU-R 601-2 luma in 16-bit fixed point).
    pub fn from_rgb(image: &RgbImage) -> Self {
        let pixels = image
            .pixels
            .chunks_exact(3)
            .map(|p| {
                let luma =
                    u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471;
                ((luma + 0x8000) >> 16) as u8
            })
            .collect();
        Self {
            width: image.width,
            height: image.height,
            pixels,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The binarised mask `[1, 1, h, w]`: 1 where `p / 255 ≥ 0.5` (repaint), else 0.
    pub fn to_binary_tensor(&self) -> HostTensor {
        let (h, w) = (self.height, self.width);
        HostTensor::from_shape_fn(vec![1, 1, h, w], |index| {
            let unit = f32::from(self.pixels[index[2] * w + index[3]]) / 255.0;
            if unit >= 0.5 { 1.0 } else { 0.0 }
        })
    }
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

/// Nearest-neighbour downscaling of `[n, c, h, w]` by an integer `factor` (torch's
/// `interpolate(mode="nearest")` to `(h / factor, w / factor)` picks source `(i·factor, j·factor)`).
pub(crate) fn downscale_nearest(x: &HostTensor, factor: usize) -> HostTensor {
    let shape = x.shape();
    let (n, c, h, w) = (shape[0], shape[1], shape[2] / factor, shape[3] / factor);
    HostTensor::from_shape_fn(vec![n, c, h, w], |i| {
        x[[i[0], i[1], i[2] * factor, i[3] * factor]]
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_the_vae_range() {
        let pixels: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
        let image = RgbImage::new(16, 16, pixels).unwrap();
        let tensor = image.to_tensor();
        let back =
            RgbImage::from_tensor(tensor.index_axis(Axis(0), 0).into_dimensionality().unwrap());
        assert_eq!(back, image);
    }

    #[test]
    fn decoded_values_clamp_and_round_half_to_even() {
        // 0.5 · 255 = 127.5 rounds to 128 (even); values past ±1 clamp.
        let t = ndarray::Array3::from_shape_vec((3, 1, 1), vec![0.0, -3.0, 2.0]).unwrap();
        assert_eq!(RgbImage::from_tensor(t.view()).pixels(), &[128, 0, 255]);
    }

    #[test]
    fn mask_binarises_at_half_grey() {
        let mask = GrayImage::new(3, 1, vec![127, 128, 255]).unwrap();
        let t = mask.to_binary_tensor();
        assert_eq!(t.as_slice().unwrap(), &[0.0, 1.0, 1.0]);
    }

    #[test]
    fn pil_luma_of_primaries() {
        let rgb = RgbImage::new(3, 1, vec![255, 0, 0, 0, 255, 0, 0, 0, 255]).unwrap();
        assert_eq!(GrayImage::from_rgb(&rgb).pixels(), &[76, 150, 29]);
    }

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
        let pixels = (0..20 * 3).map(|i| if i % 20 < 10 { 255 } else { 0 }).collect();
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
    fn wrong_byte_counts_are_errors() {
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
        assert!(GrayImage::new(0, 2, vec![]).is_err());
    }
}
