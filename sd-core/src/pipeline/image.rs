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
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) pixels: Vec<u8>,
}

/// An 8-bit greyscale image (inpainting masks: white repaints, black keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) pixels: Vec<u8>,
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
    fn wrong_byte_counts_are_errors() {
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
        assert!(GrayImage::new(0, 2, vec![]).is_err());
    }
}
