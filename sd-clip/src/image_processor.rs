//! transformers' `CLIPImageProcessor` (its PIL backend, the one transformers runs when
//! torchvision is absent and the one A1111 ran): resize so the shortest side is `size` with
//! Pillow's resampling ([`crate::resample`]), center crop, `× rescale_factor`, then
//! `(x − mean) / std` per channel. Read from a `preprocessor_config.json` in either the current
//! form (`"size": {"shortest_edge": 224}`) or the old `CLIPFeatureExtractor` one (`"size": 224`).

use std::path::Path;

use sd_core::config_file::read_config;
use sd_core::pipeline::RgbImage;
use sd_core::{Error, HostTensor, Result};
use serde::Deserialize;

use crate::resample::{ResampleFilter, resize};

/// OpenAI CLIP's per-channel normalisation.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// A size as preprocessor configs write it: a bare number, or a dict.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
enum SizeField {
    Side(usize),
    ShortestEdge { shortest_edge: usize },
    Exact { height: usize, width: usize },
}

/// The fields of `preprocessor_config.json` the preprocessing reads, at `CLIPImageProcessor`'s
/// defaults when missing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct PreprocessorFile {
    do_resize: bool,
    size: SizeField,
    resample: u32,
    do_center_crop: bool,
    crop_size: SizeField,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    image_mean: Vec<f64>,
    image_std: Vec<f64>,
}

impl Default for PreprocessorFile {
    fn default() -> Self {
        PreprocessorFile {
            do_resize: true,
            size: SizeField::ShortestEdge { shortest_edge: 224 },
            resample: 3,
            do_center_crop: true,
            crop_size: SizeField::Exact {
                height: 224,
                width: 224,
            },
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN.to_vec(),
            image_std: CLIP_STD.to_vec(),
        }
    }
}

/// How images are resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ResizeTo {
    /// The shorter side becomes this; the other keeps the aspect ratio (rounded down).
    ShortestEdge(usize),
    Exact {
        height: usize,
        width: usize,
    },
}

/// CLIP's image preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    resize: Option<(ResizeTo, ResampleFilter)>,
    crop: Option<(usize, usize)>,
    rescale: Option<f64>,
    normalize: Option<([f64; 3], [f64; 3])>,
}

impl Default for ClipImageProcessor {
    /// `CLIPImageProcessor()`: shortest side 224 (bicubic), center crop 224², CLIP's mean/std.
    fn default() -> Self {
        Self::from_file_fields(PreprocessorFile::default(), Path::new("<defaults>"))
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

impl ClipImageProcessor {
    /// Read a `preprocessor_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_file_fields(read_config(path)?, path)
    }

    fn from_file_fields(file: PreprocessorFile, path: &Path) -> Result<Self> {
        let field_error = |field: &str, reason: String| Error::Config {
            path: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        let positive = |field: &str, n: usize| {
            if n == 0 {
                Err(field_error(field, "sizes must be positive".into()))
            } else {
                Ok(n)
            }
        };
        let resize = if file.do_resize {
            let to = match file.size {
                SizeField::Side(side)
                | SizeField::ShortestEdge {
                    shortest_edge: side,
                } => ResizeTo::ShortestEdge(positive("size", side)?),
                SizeField::Exact { height, width } => ResizeTo::Exact {
                    height: positive("size", height)?,
                    width: positive("size", width)?,
                },
            };
            let filter = ResampleFilter::from_pil_code(file.resample).ok_or_else(|| {
                field_error(
                    "resample",
                    format!(
                        "Pillow filter {} is not supported (2 = bilinear, 3 = bicubic are)",
                        file.resample
                    ),
                )
            })?;
            Some((to, filter))
        } else {
            None
        };
        let crop = if file.do_center_crop {
            Some(match file.crop_size {
                SizeField::Side(side) => (positive("crop_size", side)?, side),
                SizeField::Exact { height, width } => (
                    positive("crop_size", height)?,
                    positive("crop_size", width)?,
                ),
                SizeField::ShortestEdge { .. } => {
                    return Err(field_error(
                        "crop_size",
                        "expected a number or {\"height\", \"width\"}".into(),
                    ));
                }
            })
        } else {
            None
        };
        let three = |field: &str, values: &[f64]| -> Result<[f64; 3]> {
            <[f64; 3]>::try_from(values)
                .map_err(|_| field_error(field, format!("expected 3 values, found {values:?}")))
        };
        let normalize = if file.do_normalize {
            let std = three("image_std", &file.image_std)?;
            if std.iter().any(|&s| !(s.is_finite() && s != 0.0)) {
                return Err(field_error(
                    "image_std",
                    format!("{std:?} must be finite and non-zero"),
                ));
            }
            Some((three("image_mean", &file.image_mean)?, std))
        } else {
            None
        };
        Ok(ClipImageProcessor {
            resize,
            crop,
            rescale: file.do_rescale.then_some(file.rescale_factor),
            normalize,
        })
    }

    /// The `[h, w]` of each image after preprocessing `width × height` pixels.
    fn output_size(&self, width: usize, height: usize) -> (usize, usize) {
        match (self.crop, self.resize) {
            (Some((h, w)), _) => (h, w),
            (None, Some((to, _))) => resized_size(to, width, height),
            (None, None) => (height, width),
        }
    }

    /// The pixel values of `images` (all of one size after preprocessing), `[n, 3, h, w]`: what
    /// `CLIPImageProcessor(images, return_tensors="pt").pixel_values` holds.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<HostTensor> {
        let first = images
            .first()
            .ok_or_else(|| Error::invalid_argument("images", "no images to preprocess"))?;
        let (h, w) = self.output_size(first.width(), first.height());
        let mut out = HostTensor::zeros(vec![images.len(), 3, h, w]);
        for (n, image) in images.iter().enumerate() {
            let (bytes, (width, height)) = self.resized_and_cropped(image)?;
            if (height, width) != (h, w) {
                return Err(Error::invalid_argument(
                    "images",
                    format!(
                        "image {n} preprocesses to {width}×{height}, image 0 to {w}×{h}: \
                         a batch needs one size"
                    ),
                ));
            }
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        out[[n, c, y, x]] = self.value(bytes[(y * w + x) * 3 + c], c);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One sample after rescaling and normalising (transformers rescales in f64, then f32).
    fn value(&self, byte: u8, channel: usize) -> f32 {
        let mut v = f64::from(byte);
        if let Some(factor) = self.rescale {
            v = f64::from((v * factor) as f32);
        }
        if let Some((mean, std)) = self.normalize {
            v = (v - mean[channel]) / std[channel];
        }
        v as f32
    }

    /// The 8-bit image after the resize and the crop, with its `(width, height)`.
    pub fn resized_and_cropped(&self, image: &RgbImage) -> Result<(Vec<u8>, (usize, usize))> {
        let (mut width, mut height) = (image.width(), image.height());
        let mut bytes = image.pixels().to_vec();
        if let Some((to, filter)) = self.resize {
            let (new_height, new_width) = resized_size(to, width, height);
            bytes = resize(&bytes, (width, height), 3, (new_width, new_height), filter)?;
            (width, height) = (new_width, new_height);
        }
        if let Some((crop_h, crop_w)) = self.crop {
            if crop_h > height || crop_w > width {
                return Err(Error::invalid_argument(
                    "crop_size",
                    format!(
                        "a {crop_w}×{crop_h} crop of a {width}×{height} image needs padding, \
                         which is not supported"
                    ),
                ));
            }
            let (top, left) = ((height - crop_h) / 2, (width - crop_w) / 2);
            bytes = (top..top + crop_h)
                .flat_map(|y| {
                    let start = (y * width + left) * 3;
                    bytes[start..start + crop_w * 3].iter().copied()
                })
                .collect();
            (width, height) = (crop_w, crop_h);
        }
        Ok((bytes, (width, height)))
    }
}

/// `(height, width)` after resizing (transformers' `get_resize_output_image_size` with
/// `default_to_square=False`: the long side is `int(size · long / short)`).
fn resized_size(to: ResizeTo, width: usize, height: usize) -> (usize, usize) {
    match to {
        ResizeTo::Exact { height, width } => (height, width),
        ResizeTo::ShortestEdge(side) => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            let new_long = (side as f64 * long as f64 / short as f64) as usize;
            if width <= height {
                (new_long, side)
            } else {
                (side, new_long)
            }
        }
    }
}
