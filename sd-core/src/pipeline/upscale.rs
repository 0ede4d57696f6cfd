//! Latent resizing for the hires fix: A1111's "latent upscalers", each one call of torch's
//! `torch.nn.functional.interpolate(latents, size=(h, w), mode=…, antialias=…)` on
//! `[batch, c, h, w]` latents, reproduced as torch's CPU kernels compute it in f32.
//!
//! | A1111 name | torch |
//! |---|---|
//! | `Latent` | `bilinear`, `align_corners=False` |
//! | `Latent (antialiased)` | `bilinear`, `antialias=True` |
//! | `Latent (bicubic)` | `bicubic` (Keys' cubic with a = −0.75), `align_corners=False` |
//! | `Latent (bicubic antialiased)` | `bicubic`, `antialias=True` (a = −0.5, as PIL) |
//! | `Latent (nearest)` | `nearest` (source `⌊i·in/out⌋`) |
//! | `Latent (nearest-exact)` | `nearest-exact` (source `⌊(i + ½)·in/out⌋`) |
//!
//! Latents live on the host between the passes (64 KiB at 512×512), like the schedulers'
//! state, so this is a host function rather than a backend op. The plain modes are one 2-D
//! gather per output pixel (rows' taps outside, columns' inside, as torch's generic kernel
//! sums them); the antialiased ones are torch's separable filter: columns first into a
//! temporary, then rows, each tap weight normalised over the taps inside the image.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array4, Ix4};

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// How latents are resized between the passes of the hires fix (A1111's latent upscalers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatentUpscaler {
    /// A1111's `Latent` (its default): bilinear.
    #[default]
    Bilinear,
    /// `Latent (antialiased)`.
    BilinearAntialiased,
    /// `Latent (bicubic)`.
    Bicubic,
    /// `Latent (bicubic antialiased)`.
    BicubicAntialiased,
    /// `Latent (nearest)`.
    Nearest,
    /// `Latent (nearest-exact)`.
    NearestExact,
}

impl LatentUpscaler {
    /// Every mode, in A1111's menu order.
    pub const ALL: [Self; 6] = [
        Self::Bilinear,
        Self::BilinearAntialiased,
        Self::Bicubic,
        Self::BicubicAntialiased,
        Self::Nearest,
        Self::NearestExact,
    ];

    /// The name A1111 gives it (`hr_upscaler`, the `Hires upscaler` infotext entry).
    pub fn a1111_name(self) -> &'static str {
        match self {
            Self::Bilinear => "Latent",
            Self::BilinearAntialiased => "Latent (antialiased)",
            Self::Bicubic => "Latent (bicubic)",
            Self::BicubicAntialiased => "Latent (bicubic antialiased)",
            Self::Nearest => "Latent (nearest)",
            Self::NearestExact => "Latent (nearest-exact)",
        }
    }

    /// torch's `mode` argument of `interpolate`.
    pub fn torch_mode(self) -> &'static str {
        match self {
            Self::Bilinear | Self::BilinearAntialiased => "bilinear",
            Self::Bicubic | Self::BicubicAntialiased => "bicubic",
            Self::Nearest => "nearest",
            Self::NearestExact => "nearest-exact",
        }
    }

    /// torch's `antialias` argument of `interpolate`.
    pub fn antialias(self) -> bool {
        matches!(self, Self::BilinearAntialiased | Self::BicubicAntialiased)
    }

    /// `latents [n, c, h, w]` resized to `[n, c, height, width]`.
    pub fn resize(self, latents: &HostTensor, height: usize, width: usize) -> Result<HostTensor> {
        let x = latents.view().into_dimensionality::<Ix4>().map_err(|_| {
            Error::shape(
                "latent upscale",
                format!("expected [n, c, h, w] latents, found {:?}", latents.shape()),
            )
        })?;
        let (h_in, w_in) = (x.shape()[2], x.shape()[3]);
        if height == 0 || width == 0 || h_in == 0 || w_in == 0 {
            return Err(Error::invalid_argument(
                "hires size",
                format!("cannot resize {w_in}×{h_in} latents to {width}×{height}"),
            ));
        }
        let x = x.to_owned();
        let out = match self {
            Self::Nearest | Self::NearestExact => {
                let exact = self == Self::NearestExact;
                let rows = nearest_sources(h_in, height, exact);
                let cols = nearest_sources(w_in, width, exact);
                gather(&x, height, width, |n, c, i, j| x[[n, c, rows[i], cols[j]]])
            }
            Self::Bilinear | Self::Bicubic => {
                let kernel = if self == Self::Bilinear {
                    Kernel::Linear
                } else {
                    Kernel::Cubic
                };
                let rows = kernel.taps(h_in, height);
                let cols = kernel.taps(w_in, width);
                gather(&x, height, width, |n, c, i, j| {
                    let mut sum = 0f32;
                    for (k, (&row, &wy)) in rows[i].index.iter().zip(&rows[i].weight).enumerate() {
                        let mut inner = 0f32;
                        for (l, (&col, &wx)) in
                            cols[j].index.iter().zip(&cols[j].weight).enumerate()
                        {
                            let term = x[[n, c, row, col]] * wx;
                            inner = if l == 0 { term } else { inner + term };
                        }
                        sum = if k == 0 { inner * wy } else { sum + inner * wy };
                    }
                    sum
                })
            }
            Self::BilinearAntialiased | Self::BicubicAntialiased => {
                let kernel = if self == Self::BilinearAntialiased {
                    Kernel::Linear
                } else {
                    Kernel::Cubic
                };
                // torch skips a pass whose side does not change.
                let across = if width == w_in {
                    x
                } else {
                    let cols = kernel.antialiased_taps(w_in, width);
                    gather(&x, h_in, width, |n, c, i, j| {
                        weighted_sum(&cols[j], |col| x[[n, c, i, col]])
                    })
                };
                if height == h_in {
                    across
                } else {
                    let rows = kernel.antialiased_taps(h_in, height);
                    gather(&across, height, width, |n, c, i, j| {
                        weighted_sum(&rows[i], |row| across[[n, c, row, j]])
                    })
                }
            }
        };
        Ok(out.into_dyn())
    }
}

impl fmt::Display for LatentUpscaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.a1111_name())
    }
}

impl FromStr for LatentUpscaler {
    type Err = Error;

    /// A1111's name (`Latent (bicubic)`), exactly as its menu spells it.
    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.a1111_name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|m| m.a1111_name()).collect();
                Error::invalid_argument(
                    "hires upscaler",
                    format!(
                        "{name:?} is not a latent upscaler (known: {})",
                        known.join(", ")
                    ),
                )
            })
    }
}

/// `[n, c, height, width]` from `value(n, c, i, j)`.
fn gather(
    x: &Array4<f32>,
    height: usize,
    width: usize,
    value: impl Fn(usize, usize, usize, usize) -> f32,
) -> Array4<f32> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    Array4::from_shape_fn((n, c, height, width), |(n, c, i, j)| value(n, c, i, j))
}

/// torch's `(float) input / output`, the scale of every mode when a size is given.
fn scale(input: usize, output: usize) -> f32 {
    input as f32 / output as f32
}

/// Source index of each output index: torch's `nearest_idx` / `nearest_exact_idx`.
fn nearest_sources(input: usize, output: usize, exact: bool) -> Vec<usize> {
    let s = scale(input, output);
    (0..output)
        .map(|i| {
            if exact {
                // torch computes (i + 0.5)·scale in double, then floors it as a float.
                let source = ((i as f64 + 0.5) * f64::from(s)) as f32;
                (source.floor() as usize).min(input - 1)
            } else if output == input {
                i
            } else if output == 2 * input {
                i >> 1
            } else {
                ((i as f32 * s).floor() as usize).min(input - 1)
            }
        })
        .collect()
}

/// The source indices of one output index and their weights, in summation order.
#[derive(Debug, Clone, Default)]
struct Taps {
    index: Vec<usize>,
    weight: Vec<f32>,
}

fn weighted_sum(taps: &Taps, source: impl Fn(usize) -> f32) -> f32 {
    let mut sum = 0f32;
    for (k, (&index, &weight)) in taps.index.iter().zip(&taps.weight).enumerate() {
        let term = source(index) * weight;
        sum = if k == 0 { term } else { sum + term };
    }
    sum
}

#[derive(Debug, Clone, Copy)]
enum Kernel {
    Linear,
    Cubic,
}

/// Keys' cubic for |x| ≤ 1 and for 1 < |x| < 2 (torch's `cubic_convolution1/2`).
fn cubic_near(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

fn cubic_far(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

impl Kernel {
    /// Taps per output index without antialiasing (`align_corners=False`).
    fn taps(self, input: usize, output: usize) -> Vec<Taps> {
        let s = scale(input, output);
        let last = input - 1;
        (0..output)
            .map(|i| {
                // area_pixel_compute_source_index: s·(i + ½) − ½, clamped at 0 for linear only.
                let real = s * (i as f32 + 0.5) - 0.5;
                match self {
                    Kernel::Linear => {
                        if input == output {
                            return Taps {
                                index: vec![i, i],
                                weight: vec![1.0, 0.0],
                            };
                        }
                        let real = real.max(0.0);
                        let i0 = (real.floor() as usize).min(last);
                        let lambda1 = (real - i0 as f32).clamp(0.0, 1.0);
                        let i1 = if i0 < last { i0 + 1 } else { i0 };
                        Taps {
                            index: vec![i0, i1],
                            weight: vec![1.0 - lambda1, lambda1],
                        }
                    }
                    Kernel::Cubic => {
                        let floor = real.floor();
                        let i0 = (floor as i64).min(last as i64);
                        let t = (real - i0 as f32).clamp(0.0, 1.0);
                        const A: f32 = -0.75;
                        let weight = vec![
                            cubic_far(t + 1.0, A),
                            cubic_near(t, A),
                            cubic_near(1.0 - t, A),
                            cubic_far(2.0 - t, A),
                        ];
                        let index = (0..4)
                            .map(|k| (i0 - 1 + k).clamp(0, last as i64) as usize)
                            .collect();
                        Taps { index, weight }
                    }
                }
            })
            .collect()
    }

    /// torch's antialiasing filter (`aa_filter`): the triangle, or Keys' cubic with a = −0.5.
    fn filter(self, x: f32) -> f32 {
        let x = x.abs();
        match self {
            Kernel::Linear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Kernel::Cubic => {
                const A: f32 = -0.5;
                if x < 1.0 {
                    cubic_near(x, A)
                } else if x < 2.0 {
                    cubic_far(x, A)
                } else {
                    0.0
                }
            }
        }
    }

    /// Taps per output index with antialiasing: torch's
    /// `_compute_indices_min_size_weights_aa` (the filter widened by the scale when shrinking,
    /// weights normalised over the taps inside the image).
    fn antialiased_taps(self, input: usize, output: usize) -> Vec<Taps> {
        let s = scale(input, output);
        let half_width: f32 = match self {
            Kernel::Linear => 1.0,
            Kernel::Cubic => 2.0,
        };
        let (support, invscale) = if s >= 1.0 {
            (half_width * s, 1.0 / s)
        } else {
            (half_width, 1.0)
        };
        let max_taps = support.ceil() as i64 * 2 + 1;
        (0..output)
            .map(|i| {
                let center = (f64::from(s) * (i as f64 + 0.5)) as f32;
                // Truncation toward zero, as the C++ cast; negatives are clamped to 0 anyway.
                let xmin = ((f64::from(center - support) + 0.5) as i64).max(0);
                let xend = ((f64::from(center + support) + 0.5) as i64).min(input as i64);
                let size = (xend - xmin).clamp(0, max_taps);
                let mut weight: Vec<f32> = (0..size)
                    .map(|j| {
                        let offset = f64::from((j + xmin) as f32 - center) + 0.5;
                        self.filter((offset * f64::from(invscale)) as f32)
                    })
                    .collect();
                let total: f32 = weight.iter().fold(0.0, |sum, w| sum + w);
                if total != 0.0 {
                    weight.iter_mut().for_each(|w| *w /= total);
                }
                Taps {
                    index: (0..size).map(|j| (xmin + j) as usize).collect(),
                    weight,
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> HostTensor {
        HostTensor::from_shape_fn(vec![1, 1, h, w], |i| (i[2] * w + i[3]) as f32)
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_modes() {
        for mode in LatentUpscaler::ALL {
            assert_eq!(mode.a1111_name().parse::<LatentUpscaler>().unwrap(), mode);
        }
        let err = "R-ESRGAN 4x+".parse::<LatentUpscaler>().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("R-ESRGAN") && text.contains("Latent (nearest-exact)"),
            "{text}"
        );
    }

    #[test]
    fn nearest_doubling_repeats_each_latent() {
        let out = LatentUpscaler::Nearest.resize(&ramp(2, 2), 4, 4).unwrap();
        let row0: Vec<f32> = (0..4).map(|j| out[[0, 0, 0, j]]).collect();
        assert_eq!(row0, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(out[[0, 0, 3, 3]], 3.0);
    }

    #[test]
    fn every_mode_keeps_a_constant_and_the_same_size_is_the_identity() {
        let constant = HostTensor::from_elem(vec![2, 4, 3, 5], 0.25);
        let x = ramp(3, 5);
        for mode in LatentUpscaler::ALL {
            let up = mode.resize(&constant, 7, 9).unwrap();
            assert_eq!(up.shape(), &[2, 4, 7, 9]);
            assert!(up.iter().all(|&v| (v - 0.25).abs() < 1e-6), "{mode}");
            let same = mode.resize(&x, 3, 5).unwrap();
            assert_eq!(same, x, "{mode}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let flat = HostTensor::zeros(vec![4, 8]);
        assert!(LatentUpscaler::Bilinear.resize(&flat, 2, 2).is_err());
        assert!(LatentUpscaler::Bilinear.resize(&ramp(2, 2), 0, 2).is_err());
    }
}
