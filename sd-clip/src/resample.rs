//! Pillow's `Image.resize` for 8-bit images (its `Resample.c`), reimplemented so that CLIP's
//! preprocessing sees the bytes the reference sees: transformers resizes safety-checker inputs
//! with PIL, and a float resize differs from PIL's by up to a grey level per pixel.
//!
//! Pillow resamples each axis separately (horizontal first, then vertical), each pass a
//! convolution whose kernel is stretched by the downscale factor (antialiasing), with the
//! weights of each output pixel normalised to sum 1, turned into 22-bit fixed point, and each
//! pass's result rounded and clamped back to 8 bits. An axis whose size does not change is
//! not resampled at all.

use sd_core::{Error, Result};

/// The resampling filters of Pillow this supports (`Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleFilter {
    /// Pillow's `BILINEAR` (2): a triangle of support 1.
    Bilinear,
    /// Pillow's `BICUBIC` (3): Keys' cubic with a = −0.5, support 2 (CLIP's choice).
    Bicubic,
}

impl ResampleFilter {
    /// The filter of Pillow's numeric `resample` code, as configs store it.
    pub fn from_pil_code(code: u32) -> Option<Self> {
        match code {
            2 => Some(ResampleFilter::Bilinear),
            3 => Some(ResampleFilter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            ResampleFilter::Bilinear => 1.0,
            ResampleFilter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            ResampleFilter::Bilinear if x < 1.0 => 1.0 - x,
            ResampleFilter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            ResampleFilter::Bilinear => 0.0,
        }
    }
}

/// Fixed-point bits of the 8-bit resampling weights: 32 − 8 (sample) − 2 (headroom).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel of one axis: the first input pixel and the fixed-point weights of the
/// input pixels from there on.
struct AxisKernel {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

impl AxisKernel {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize, filter: ResampleFilter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        let mut first = Vec::with_capacity(out_size);
        let mut weights = Vec::with_capacity(out_size);
        for out in 0..out_size {
            let center = (out as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; the clamps follow it, as in Pillow.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
            let raw: Vec<f64> = (lo..hi)
                .map(|x| filter.weight((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    // Round half away from zero, then truncate, as Pillow's casts do.
                    (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            first.push(lo);
            weights.push(fixed);
        }
        AxisKernel { first, weights }
    }

    /// One output sample from the input samples `at(first + i)`.
    fn apply(&self, out: usize, at: impl Fn(usize) -> u8) -> u8 {
        let mut sum: i64 = 1 << (PRECISION_BITS - 1);
        for (i, &w) in self.weights[out].iter().enumerate() {
            sum += i64::from(at(self.first[out] + i)) * i64::from(w);
        }
        clip8(sum)
    }
}

/// A fixed-point sum back to 8 bits, clamped.
fn clip8(sum: i64) -> u8 {
    if sum <= 0 {
        0
    } else {
        (sum >> PRECISION_BITS).min(255) as u8
    }
}

/// Resize an interleaved 8-bit image (`channels` samples per pixel, rows top to bottom) from
/// `width × height` to `new_width × new_height` as Pillow's `Image.resize(size, filter)` does.
pub fn resize(
    pixels: &[u8],
    (width, height): (usize, usize),
    channels: usize,
    (new_width, new_height): (usize, usize),
    filter: ResampleFilter,
) -> Result<Vec<u8>> {
    if width == 0 || height == 0 || new_width == 0 || new_height == 0 {
        return Err(Error::invalid_argument(
            "resize",
            format!("{width}×{height} → {new_width}×{new_height}: sides must be positive"),
        ));
    }
    if width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(channels))
        != Some(pixels.len())
    {
        return Err(Error::invalid_argument(
            "resize",
            format!(
                "{width}×{height}×{channels} samples do not fit {} bytes",
                pixels.len()
            ),
        ));
    }
    let mut image = pixels.to_vec();
    if new_width != width {
        let kernel = AxisKernel::new(width, new_width, filter);
        let mut out = Vec::with_capacity(new_width * height * channels);
        for y in 0..height {
            let row = &image[y * width * channels..(y + 1) * width * channels];
            for x in 0..new_width {
                for c in 0..channels {
                    out.push(kernel.apply(x, |i| row[i * channels + c]));
                }
            }
        }
        image = out;
    }
    if new_height != height {
        let kernel = AxisKernel::new(height, new_height, filter);
        let stride = new_width * channels;
        let mut out = Vec::with_capacity(new_height * stride);
        for y in 0..new_height {
            for offset in 0..stride {
                out.push(kernel.apply(y, |i| image[i * stride + offset]));
            }
        }
        image = out;
    }
    Ok(image)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_copy_and_flat_stays_flat() {
        let pixels: Vec<u8> = (0..4 * 3 * 3).map(|i| i as u8).collect();
        let same = resize(&pixels, (4, 3), 3, (4, 3), ResampleFilter::Bicubic).unwrap();
        assert_eq!(same, pixels);
        let flat = vec![77u8; 10 * 7 * 3];
        let out = resize(&flat, (10, 7), 3, (4, 9), ResampleFilter::Bicubic).unwrap();
        assert!(out.iter().all(|&p| p == 77));
    }

    #[test]
    fn sizes_that_do_not_fit_the_bytes_are_refused() {
        assert!(resize(&[0; 5], (2, 1), 3, (1, 1), ResampleFilter::Bicubic).is_err());
        assert!(resize(&[0; 6], (2, 1), 3, (0, 1), ResampleFilter::Bicubic).is_err());
    }
}
