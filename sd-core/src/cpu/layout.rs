//! Reshape, permute, narrow, concat, upsample and embedding: ops that only move data.
//!
//! All copies go by contiguous runs (`copy_from_slice`) wherever the layouts allow it, split
//! across rayon tasks by output blocks.

use ndarray::IxDyn;
use rayon::prelude::*;

use super::elementwise::PAR_CHUNK;
use super::{CpuTensor, Repr};
use crate::backend::TensorInfo;
use crate::error::{Error, Result};
use crate::shapes::{self, ConcatDims, EmbeddingDims, NarrowDims};

pub(crate) fn reshape(x: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
    let target = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if target != Some(x.numel()) {
        return Err(Error::shape(
            "reshape",
            format!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                x.shape(),
                x.numel()
            ),
        ));
    }
    // Standard layout in, standard layout out: this only rewrites the header and shares storage.
    let dense = x.dense();
    let array = match &dense.0 {
        Repr::Dense(a) => a.clone(),
        Repr::Packed(_) => unreachable!("dense() unpacks"),
    };
    let array = array
        .into_shape_with_order(IxDyn(shape))
        .map_err(|e| Error::shape("reshape", format!("{:?} to {shape:?}: {e}", x.shape())))?;
    Ok(CpuTensor(Repr::Dense(array)))
}

pub(crate) fn permute(x: &CpuTensor, axes: &[usize]) -> Result<CpuTensor> {
    let shape = x.shape();
    let out_shape = shapes::permute_shape(shape, axes)?;
    let src = x.data();
    let mut out = vec![0.0; src.len()];
    if out.is_empty() {
        return CpuTensor::from_vec(&out_shape, out);
    }

    let walk = PermutedWalk::new(shape, axes);
    let (dims, strides) = (&walk.dims, &walk.src_strides);
    let rank = dims.len();
    if rank >= 2 && strides[rank - 1] != 1 && strides[rank - 2] == 1 {
        transpose_last_two(src, &mut out, &walk);
    } else {
        gather_rows(src, &mut out, &walk);
    }
    CpuTensor::from_vec(&out_shape, out)
}

/// The output of a permute seen as a walk over the source: output dims (size-1 dims dropped,
/// neighbours merged where they stay neighbours in the source) and the source stride of each.
/// A batched transpose of any rank collapses to `[batch.., n, m]` with source strides
/// `[.., 1, n]`.
#[derive(Debug)]
struct PermutedWalk {
    dims: Vec<usize>,
    src_strides: Vec<usize>,
}

impl PermutedWalk {
    fn new(shape: &[usize], axes: &[usize]) -> Self {
        let mut src_stride = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            src_stride[i] = src_stride[i + 1] * shape[i + 1];
        }
        let mut walk = PermutedWalk {
            dims: Vec::new(),
            src_strides: Vec::new(),
        };
        for &axis in axes {
            let (dim, stride) = (shape[axis], src_stride[axis]);
            if dim == 1 {
                continue;
            }
            if let (Some(last_dim), Some(last_stride)) =
                (walk.dims.last_mut(), walk.src_strides.last_mut())
                && *last_stride == stride * dim
            {
                *last_dim *= dim;
                *last_stride = stride;
                continue;
            }
            walk.dims.push(dim);
            walk.src_strides.push(stride);
        }
        walk
    }

    /// Source offset of the start of output row `row` (a row = the innermost walk dim).
    fn row_offset(&self, mut row: usize) -> usize {
        let outer = self.dims.len().saturating_sub(1);
        let mut offset = 0;
        for k in (0..outer).rev() {
            offset += (row % self.dims[k]) * self.src_strides[k];
            row /= self.dims[k];
        }
        offset
    }
}

/// General permute: every output row is a (possibly strided) run of the source.
fn gather_rows(src: &[f32], out: &mut [f32], walk: &PermutedWalk) {
    let row_len = walk.dims.last().copied().unwrap_or(1);
    let step = walk.src_strides.last().copied().unwrap_or(1);
    let rows_per_task = (PAR_CHUNK / row_len).max(1);
    out.par_chunks_mut(rows_per_task * row_len)
        .enumerate()
        .for_each(|(task, out)| {
            let first_row = task * rows_per_task;
            for (r, out_row) in out.chunks_exact_mut(row_len).enumerate() {
                let start = walk.row_offset(first_row + r);
                if step == 1 {
                    out_row.copy_from_slice(&src[start..start + row_len]);
                } else {
                    let run = src[start..].iter().step_by(step);
                    for (o, &v) in out_row.iter_mut().zip(run) {
                        *o = v;
                    }
                }
            }
        });
}

/// Side of the square tiles of the blocked transpose (a 4 KiB tile buffer, in L1).
const TILE: usize = 32;

/// Batched transpose `[.., n, m] ← source [.., m, n]`, one `TILE × TILE` tile at a time through
/// a small buffer: tile rows are read from the source as contiguous runs and written to the
/// output as contiguous runs. (Gathering output rows straight from the source instead reads
/// one element per cache line; with a power-of-two source row length, such as 4096 pixels,
/// those lines all land in the same L1 set and every read misses.)
fn transpose_last_two(src: &[f32], out: &mut [f32], walk: &PermutedWalk) {
    let rank = walk.dims.len();
    let (n, m) = (walk.dims[rank - 2], walk.dims[rank - 1]);
    let m_stride = walk.src_strides[rank - 1];
    out.par_chunks_mut(n * m)
        .enumerate()
        .for_each(|(batch, out)| {
            let base = walk.row_offset(batch * n);
            out.par_chunks_mut(TILE * m)
                .enumerate()
                .for_each(|(tile_row, out)| {
                    let n0 = tile_row * TILE;
                    let rows = out.len() / m;
                    let mut tile = [0.0f32; TILE * TILE];
                    for m0 in (0..m).step_by(TILE) {
                        let cols = TILE.min(m - m0);
                        for (j, buffered) in tile.chunks_exact_mut(TILE).take(cols).enumerate() {
                            let from = base + (m0 + j) * m_stride + n0;
                            buffered[..rows].copy_from_slice(&src[from..from + rows]);
                        }
                        for (r, out_row) in out.chunks_exact_mut(m).enumerate() {
                            let column = tile[r..].iter().step_by(TILE);
                            for (o, &v) in out_row[m0..m0 + cols].iter_mut().zip(column) {
                                *o = v;
                            }
                        }
                    }
                });
        });
}

pub(crate) fn narrow(x: &CpuTensor, axis: usize, start: usize, len: usize) -> Result<CpuTensor> {
    let NarrowDims {
        dim,
        inner,
        out_shape,
        ..
    } = shapes::narrow_dims(x.shape(), axis, start, len)?;
    let src = x.data();
    let mut out = vec![0.0; out_shape.iter().product()];
    if out.is_empty() {
        return CpuTensor::from_vec(&out_shape, out);
    }
    // One contiguous run of `len · inner` elements per index of the dims before `axis`.
    let block = len * inner;
    out.par_chunks_mut(block).enumerate().for_each(|(o, out)| {
        let from = (o * dim + start) * inner;
        out.copy_from_slice(&src[from..from + block]);
    });
    CpuTensor::from_vec(&out_shape, out)
}

pub(crate) fn concat(xs: &[&CpuTensor], axis: usize) -> Result<CpuTensor> {
    let input_shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let ConcatDims {
        inner, out_shape, ..
    } = shapes::concat_dims(&input_shapes, axis)?;
    let mut out = vec![0.0; out_shape.iter().product()];
    if out.is_empty() {
        return CpuTensor::from_vec(&out_shape, out);
    }
    // For each index of the dims before `axis`, the output holds each input's block in turn.
    let blocks: Vec<(&[f32], usize)> = xs
        .iter()
        .map(|x| (x.data(), x.shape()[axis] * inner))
        .collect();
    out.par_chunks_mut(out_shape[axis] * inner)
        .enumerate()
        .for_each(|(o, mut out)| {
            for &(data, block) in &blocks {
                let (dst, rest) = out.split_at_mut(block);
                dst.copy_from_slice(&data[o * block..(o + 1) * block]);
                out = rest;
            }
        });
    CpuTensor::from_vec(&out_shape, out)
}

pub(crate) fn upsample_nearest2x(x: &CpuTensor) -> Result<CpuTensor> {
    let [n, c, h, w] = shapes::upsample_nearest2x_dims(x.shape())?;
    let out_shape = [n, c, 2 * h, 2 * w];
    let mut out = vec![0.0; 4 * x.numel()];
    if out.is_empty() {
        return CpuTensor::from_vec(&out_shape, out);
    }
    // Each source row becomes two identical output rows with every element doubled.
    let rows_per_task = (PAR_CHUNK / (4 * w)).max(1);
    out.par_chunks_mut(rows_per_task * 4 * w)
        .zip(x.data().par_chunks(rows_per_task * w))
        .for_each(|(out, src)| {
            for (pair, row) in out.chunks_exact_mut(4 * w).zip(src.chunks_exact(w)) {
                let (top, bottom) = pair.split_at_mut(2 * w);
                for (o, &v) in top.chunks_exact_mut(2).zip(row) {
                    o[0] = v;
                    o[1] = v;
                }
                bottom.copy_from_slice(top);
            }
        });
    CpuTensor::from_vec(&out_shape, out)
}

pub(crate) fn embedding(table: &CpuTensor, ids: &[u32], ids_shape: &[usize]) -> Result<CpuTensor> {
    let EmbeddingDims { dim, out_shape } = shapes::embedding_dims(table.shape(), ids, ids_shape)?;
    let mut out = vec![0.0; ids.len() * dim];
    if !out.is_empty() {
        let table = table.data();
        for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
            let from = id as usize * dim;
            row.copy_from_slice(&table[from..from + dim]);
        }
    }
    CpuTensor::from_vec(&out_shape, out)
}
