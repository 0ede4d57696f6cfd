//! Tiled encode/decode: run the encoder or decoder on overlapping tiles and cross-fade the
//! overlaps, so memory is bounded by the tile size rather than the image size.
//!
//! The scheme is diffusers' `AutoencoderKL.tiled_decode` / `_tiled_encode`, reproduced exactly
//! so a tiled result matches diffusers with `enable_tiling()`: tiles start every
//! `stride = ⌊tile·(1 − overlap)⌋` input positions (edge tiles are cut short); each output
//! tile is blended, in place, with the already-blended tile above over `blend` rows and with
//! the one to its left over `blend` columns (linear ramps), then cropped to its top-left
//! `keep × keep` corner and placed next to its neighbours. Tiles see only their own pixels (group
//! norm statistics and the mid-block attention are per tile), so a tiled result differs
//! slightly from an untiled one; the blending hides the seams.

use ndarray::{Array4, ArrayView4, Axis, Ix4, s};

use sd_core::{Backend, Error, HostTensor, Result, TensorInfo};

/// When [`AutoencoderKL`](crate::AutoencoderKL) tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileMode {
    /// Never: the whole image at once (diffusers' default).
    Off,
    /// Whenever the image is larger than a tile (diffusers after `enable_tiling()`).
    On,
    /// When the image has more than `max_untiled_pixels` pixels (and is larger than a tile).
    Auto { max_untiled_pixels: usize },
}

/// Above this many pixels [`TileMode::Auto`] tiles by default: larger than 1024² (untiled
/// decode at 1024² peaks at 3.1 GiB on the CPU backend, weights included; tiled, 1.0 GiB).
pub const DEFAULT_MAX_UNTILED_PIXELS: usize = 1024 * 1024;

/// diffusers' `tile_overlap_factor`.
pub const DEFAULT_OVERLAP_FACTOR: f64 = 0.25;

/// Tiling settings of an [`AutoencoderKL`](crate::AutoencoderKL).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    pub mode: TileMode,
    /// Side of a tile in pixels (diffusers' `tile_sample_min_size`, the config's `sample_size`).
    pub tile_sample_size: usize,
    /// Fraction of a tile shared with each neighbour.
    pub overlap_factor: f64,
}

impl Tiling {
    /// Auto mode with diffusers' tile size (`sample_size`) and overlap.
    pub fn auto(sample_size: usize) -> Self {
        Tiling {
            mode: TileMode::Auto {
                max_untiled_pixels: DEFAULT_MAX_UNTILED_PIXELS,
            },
            tile_sample_size: sample_size,
            overlap_factor: DEFAULT_OVERLAP_FACTOR,
        }
    }

    /// Whether an image of `height × width` pixels is tiled.
    pub fn applies(&self, height: usize, width: usize) -> bool {
        let larger_than_tile = height > self.tile_sample_size || width > self.tile_sample_size;
        match self.mode {
            TileMode::Off => false,
            TileMode::On => larger_than_tile,
            TileMode::Auto { max_untiled_pixels } => {
                larger_than_tile && height * width > max_untiled_pixels
            }
        }
    }

    /// Side of a tile in latents.
    pub fn tile_latent_size(&self, downscale_factor: usize) -> usize {
        self.tile_sample_size / downscale_factor
    }

    /// The grid for decoding (latent tiles in, pixel tiles out).
    pub(crate) fn decode_grid(&self, downscale_factor: usize) -> Result<TileGrid> {
        let (tile_in, tile_out) = (
            self.tile_latent_size(downscale_factor),
            self.tile_sample_size,
        );
        TileGrid::new(tile_in, tile_out, self.overlap_factor)
    }

    /// The grid for encoding (pixel tiles in, latent tiles out).
    pub(crate) fn encode_grid(&self, downscale_factor: usize) -> Result<TileGrid> {
        let (tile_in, tile_out) = (
            self.tile_sample_size,
            self.tile_latent_size(downscale_factor),
        );
        TileGrid::new(tile_in, tile_out, self.overlap_factor)
    }
}

/// Where tiles start on the input and how much of each output tile is blended and kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TileGrid {
    tile_in: usize,
    stride_in: usize,
    blend_out: usize,
    keep_out: usize,
}

impl TileGrid {
    fn new(tile_in: usize, tile_out: usize, overlap: f64) -> Result<Self> {
        // Rounded down from f64 as diffusers' int(...) does.
        let stride_in = (tile_in as f64 * (1.0 - overlap)) as usize;
        let blend_out = (tile_out as f64 * overlap) as usize;
        let grid = TileGrid {
            tile_in,
            stride_in,
            blend_out,
            keep_out: tile_out.saturating_sub(blend_out),
        };
        if !(0.0..1.0).contains(&overlap) || tile_in == 0 || stride_in == 0 || grid.keep_out == 0 {
            return Err(Error::invalid_argument(
                "tiling",
                format!(
                    "tiles of {tile_in} inputs / {tile_out} outputs with overlap {overlap} leave \
                     no stride or nothing to keep ({grid:?})"
                ),
            ));
        }
        Ok(grid)
    }
}

/// Run `process` on every tile of `input [n, c, h, w]` and assemble the blended outputs.
pub(crate) fn run_tiled<B: Backend>(
    backend: &B,
    input: &B::Tensor,
    grid: TileGrid,
    mut process: impl FnMut(&B::Tensor) -> Result<B::Tensor>,
) -> Result<HostTensor> {
    let &[_, _, height, width] = input.shape() else {
        return Err(Error::shape(
            "tiled vae",
            format!("expected [n, c, h, w], found {:?}", input.shape()),
        ));
    };
    let mut above: Vec<Array4<f32>> = Vec::new();
    let mut rows = Vec::new();
    for top in (0..height).step_by(grid.stride_in) {
        let band = backend.narrow(input, 2, top, grid.tile_in.min(height - top))?;
        let mut row: Vec<Array4<f32>> = Vec::new();
        for (index, left) in (0..width).step_by(grid.stride_in).enumerate() {
            let tile = backend.narrow(&band, 3, left, grid.tile_in.min(width - left))?;
            let out = backend.download(&process(&tile)?)?;
            let mut out = out
                .into_dimensionality::<Ix4>()
                .map_err(|e| Error::shape("tiled vae", e.to_string()))?;
            if let Some(upper) = above.get(index) {
                blend_rows(upper.view(), &mut out, grid.blend_out);
            }
            if let Some(previous) = row.last() {
                blend_columns(previous.view(), &mut out, grid.blend_out);
            }
            row.push(out);
        }
        let kept: Vec<ArrayView4<'_, f32>> = row
            .iter()
            .map(|t| {
                t.slice(s![
                    ..,
                    ..,
                    ..grid.keep_out.min(t.dim().2),
                    ..grid.keep_out.min(t.dim().3)
                ])
            })
            .collect();
        rows.push(concatenate(Axis(3), &kept)?);
        above = row;
    }
    let views: Vec<ArrayView4<'_, f32>> = rows.iter().map(|r| r.view()).collect();
    Ok(concatenate(Axis(2), &views)?.into_dyn())
}

fn concatenate(axis: Axis, parts: &[ArrayView4<'_, f32>]) -> Result<Array4<f32>> {
    ndarray::concatenate(axis, parts).map_err(|e| Error::shape("tiled vae", e.to_string()))
}

/// The cross-fade weights of position `i` of `extent`: (weight of the neighbour, of the tile),
/// each rounded to f32 as torch does with a Python scalar.
fn ramp(i: usize, extent: usize) -> (f32, f32) {
    let t = i as f64 / extent as f64;
    ((1.0 - t) as f32, t as f32)
}

/// Fade the last rows of `upper` into the first rows of `tile` (diffusers' `blend_v`).
fn blend_rows(upper: ArrayView4<'_, f32>, tile: &mut Array4<f32>, extent: usize) {
    let extent = extent.min(upper.dim().2).min(tile.dim().2);
    let offset = upper.dim().2 - extent;
    for y in 0..extent {
        let (w_upper, w_tile) = ramp(y, extent);
        let source = upper.index_axis(Axis(2), offset + y);
        let mut target = tile.index_axis_mut(Axis(2), y);
        target.zip_mut_with(&source, |t, &u| *t = u * w_upper + *t * w_tile);
    }
}

/// Fade the last columns of `left` into the first columns of `tile` (diffusers' `blend_h`).
fn blend_columns(left: ArrayView4<'_, f32>, tile: &mut Array4<f32>, extent: usize) {
    let extent = extent.min(left.dim().3).min(tile.dim().3);
    let offset = left.dim().3 - extent;
    for x in 0..extent {
        let (w_left, w_tile) = ramp(x, extent);
        let source = left.index_axis(Axis(3), offset + x);
        let mut target = tile.index_axis_mut(Axis(3), x);
        target.zip_mut_with(&source, |t, &l| *t = l * w_left + *t * w_tile);
    }
}
