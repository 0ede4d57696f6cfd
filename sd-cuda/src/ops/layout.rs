//! Permute, narrow, concat, nearest upsampling and embedding (kernels/layout.cu).

use cudarc::driver::{LaunchConfig, PushKernelArg};
use sd_core::shapes::{self, ConcatDims, EmbeddingDims, NarrowDims};
use sd_core::{Error, Result, TensorInfo};

use crate::backend::{CudaBackend, driver_error};
use crate::kernels::KernelFile;
use crate::launch::{self, Walk};
use crate::tensor::{CudaTensor, PushTensor};

/// Tile side and rows per block of the transpose kernel (`TILE`, `TILE_ROWS` in layout.cu).
const TILE: usize = 32;
const TILE_ROWS: u32 = 8;

pub(crate) fn permute(b: &CudaBackend, x: &CudaTensor, axes: &[usize]) -> Result<CudaTensor> {
    b.expect_dtype("permute", &[x])?;
    let shape = x.shape();
    let out_shape = shapes::permute_shape(shape, axes)?;
    let out = b.uninit("permute", &out_shape)?;
    let n = x.numel() as u64;
    if n == 0 {
        return Ok(out);
    }
    let walk = Walk::permute(shape, axes);
    if let Some((batch, rows, cols)) = walk.as_transpose()
        && let Some(cfg) = transpose_launch(batch, rows, cols)
    {
        let (rows, cols) = (rows as u32, cols as u32);
        let f = b.typed_kernel(KernelFile::Layout, "transpose")?;
        let mut args = b.stream().launch_builder(&f);
        args.tensor(x).tensor(&out).arg(&rows).arg(&cols);
        // SAFETY: x is [batch, rows, cols] and out [batch, cols, rows], both batch·rows·cols.
        unsafe { args.launch(cfg) }.map_err(driver_error("permute"))?;
        return Ok(out);
    }
    let packed = walk.pack().ok_or_else(|| {
        Error::shape(
            "permute",
            format!(
                "permuting {shape:?} by {axes:?} needs more than {} dims",
                launch::MAX_DIMS
            ),
        )
    })?;
    let f = b.typed_kernel(KernelFile::Layout, "permute")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x).tensor(&out).arg(&n).arg(&packed);
    // SAFETY: the walk was built from x's shape, so every offset is inside x.
    unsafe { args.launch(launch::elementwise(n, b.sm_count())) }
        .map_err(driver_error("permute"))?;
    Ok(out)
}

/// The tiled transpose's launch for a `[batch, rows, cols]` source: tiles of 32×32 over
/// (cols, rows), one grid layer per batch. `None` when the grid would exceed CUDA's limits or
/// the sizes 32 bits (the general permute kernel then does it).
fn transpose_launch(batch: usize, rows: usize, cols: usize) -> Option<LaunchConfig> {
    u32::try_from(rows).ok()?;
    u32::try_from(cols).ok()?;
    Some(LaunchConfig {
        grid_dim: (
            launch::grid_x("permute", cols.div_ceil(TILE)).ok()?,
            launch::grid_yz("permute", rows.div_ceil(TILE)).ok()?,
            launch::grid_yz("permute", batch).ok()?,
        ),
        block_dim: (TILE as u32, TILE_ROWS, 1),
        shared_mem_bytes: 0,
    })
}

/// A block copy: `rows` runs of `cols` elements from `x` (runs `src_pitch` apart, starting at
/// `src_offset`) into `y` (runs `dst_pitch` apart, from `dst_offset`).
#[derive(Debug, Clone, Copy)]
struct BlockCopy {
    rows: usize,
    cols: usize,
    src_pitch: usize,
    src_offset: usize,
    dst_pitch: usize,
    dst_offset: usize,
}

fn copy_blocks(b: &CudaBackend, x: &CudaTensor, y: &CudaTensor, c: BlockCopy) -> Result<()> {
    let n = (c.rows * c.cols) as u64;
    if n == 0 {
        return Ok(());
    }
    let f = b.typed_kernel(KernelFile::Layout, "copy_2d")?;
    let [rows, cols, src_pitch, src_offset, dst_pitch, dst_offset] = [
        c.rows,
        c.cols,
        c.src_pitch,
        c.src_offset,
        c.dst_pitch,
        c.dst_offset,
    ]
    .map(|v| v as u64);
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x)
        .tensor(y)
        .arg(&rows)
        .arg(&cols)
        .arg(&src_pitch)
        .arg(&src_offset)
        .arg(&dst_pitch)
        .arg(&dst_offset);
    // SAFETY: callers derive the copy from the tensors' shapes, so both windows are in bounds.
    unsafe { args.launch(launch::elementwise(n, b.sm_count())) }
        .map_err(driver_error("block copy"))?;
    Ok(())
}

pub(crate) fn narrow(
    b: &CudaBackend,
    x: &CudaTensor,
    axis: usize,
    start: usize,
    len: usize,
) -> Result<CudaTensor> {
    b.expect_dtype("narrow", &[x])?;
    let NarrowDims {
        outer,
        dim,
        inner,
        out_shape,
    } = shapes::narrow_dims(x.shape(), axis, start, len)?;
    let out = b.uninit("narrow", &out_shape)?;
    copy_blocks(
        b,
        x,
        &out,
        BlockCopy {
            rows: outer,
            cols: len * inner,
            src_pitch: dim * inner,
            src_offset: start * inner,
            dst_pitch: len * inner,
            dst_offset: 0,
        },
    )?;
    Ok(out)
}

pub(crate) fn concat(b: &CudaBackend, xs: &[&CudaTensor], axis: usize) -> Result<CudaTensor> {
    b.expect_dtype("concat", xs)?;
    let input_shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let ConcatDims {
        outer,
        inner,
        out_shape,
    } = shapes::concat_dims(&input_shapes, axis)?;
    let out = b.uninit("concat", &out_shape)?;
    let dst_pitch = out_shape[axis] * inner;
    let mut dst_offset = 0;
    for x in xs {
        let block = x.shape()[axis] * inner;
        copy_blocks(
            b,
            x,
            &out,
            BlockCopy {
                rows: outer,
                cols: block,
                src_pitch: block,
                src_offset: 0,
                dst_pitch,
                dst_offset,
            },
        )?;
        dst_offset += block;
    }
    Ok(out)
}

pub(crate) fn upsample_nearest2x(b: &CudaBackend, x: &CudaTensor) -> Result<CudaTensor> {
    b.expect_dtype("upsample_nearest2x", &[x])?;
    let [n, c, h, w] = shapes::upsample_nearest2x_dims(x.shape())?;
    let out = b.uninit("upsample_nearest2x", &[n, c, 2 * h, 2 * w])?;
    let total = out.numel() as u64;
    if total == 0 {
        return Ok(out);
    }
    let planes = (n * c) as u64;
    let h = launch::to_u32("upsample_nearest2x", "height", h)?;
    let w = launch::to_u32("upsample_nearest2x", "width", w)?;
    let f = b.typed_kernel(KernelFile::Layout, "upsample_nearest2x")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x).tensor(&out).arg(&planes).arg(&h).arg(&w);
    // SAFETY: x is [planes, h, w] and out [planes, 2h, 2w].
    unsafe { args.launch(launch::elementwise(total, b.sm_count())) }
        .map_err(driver_error("upsample_nearest2x"))?;
    Ok(out)
}

pub(crate) fn embedding(
    b: &CudaBackend,
    table: &CudaTensor,
    ids: &[u32],
    ids_shape: &[usize],
) -> Result<CudaTensor> {
    b.expect_dtype("embedding", &[table])?;
    let EmbeddingDims { dim, out_shape } = shapes::embedding_dims(table.shape(), ids, ids_shape)?;
    let out = b.uninit("embedding", &out_shape)?;
    let total = out.numel() as u64;
    if total == 0 {
        return Ok(out);
    }
    let ids_device = b
        .stream()
        .clone_htod(ids)
        .map_err(driver_error("copy ids to the device"))?;
    let (count, dim) = (ids.len() as u64, dim as u64);
    let f = b.typed_kernel(KernelFile::Layout, "embedding")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(table)
        .arg(&ids_device)
        .tensor(&out)
        .arg(&count)
        .arg(&dim);
    // SAFETY: every id was checked against the table's rows above.
    unsafe { args.launch(launch::elementwise(total, b.sm_count())) }
        .map_err(driver_error("embedding"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::transpose_launch;

    #[test]
    fn transposes_tile_the_source_and_fall_back_past_grid_limits() {
        // The UNet's [2, 320, 4096] → [2, 4096, 320].
        let cfg = transpose_launch(2, 320, 4096).expect("fits");
        assert_eq!(cfg.grid_dim, (128, 10, 2));
        assert_eq!(cfg.block_dim, (32, 8, 1));
        assert_eq!(
            transpose_launch(1, 1, 1).map(|c| c.grid_dim),
            Some((1, 1, 1))
        );
        assert!(transpose_launch(70_000, 4, 4).is_none());
        assert!(transpose_launch(1, 32 * 65_536, 4).is_none());
    }
}
