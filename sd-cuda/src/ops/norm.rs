//! Group norm (+SiLU), layer norm and softmax (kernels/norm.cu).

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use sd_core::shapes;
use sd_core::{Result, TensorInfo};

use crate::backend::{CudaBackend, driver_error};
use crate::kernels::KernelFile;
use crate::launch::{self, THREADS};
use crate::tensor::{CudaTensor, PushTensor};

/// `GroupNormShape` of kernels/norm.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct GroupNormShape {
    group_len: u64,
    chunk_len: u64,
    spatial: u64,
    groups: u32,
    channels_per_group: u32,
    eps: f32,
    silu: i32,
}

// SAFETY: plain numbers in C layout, matching the kernel's struct.
unsafe impl DeviceRepr for GroupNormShape {}

pub(crate) fn group_norm(
    b: &CudaBackend,
    x: &CudaTensor,
    groups: usize,
    gamma: &CudaTensor,
    beta: &CudaTensor,
    eps: f32,
    silu: bool,
) -> Result<CudaTensor> {
    b.expect_dtype("group_norm", &[x, gamma, beta])?;
    let shape = x.shape();
    let dims = shapes::group_norm_dims(shape, groups, gamma.shape(), beta.shape())?;
    let out = b.uninit("group_norm", shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let (channels_per_group, spatial) = (dims.channels_per_group, dims.spatial);
    let group_len = dims.group_len();
    let groups_total = dims.batch * groups;
    let split = launch::group_split(group_len, groups_total, b.sm_count());
    let cfg = LaunchConfig {
        grid_dim: (
            launch::grid_x("group_norm", groups_total)?,
            launch::grid_yz("group_norm", split.chunks)?,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // Each chunk's f64 (sum, sum of squares).
    // SAFETY: group_stats writes every pair before group_norm_apply reads it.
    let partials = unsafe { b.stream().alloc::<f64>(2 * groups_total * split.chunks) }
        .map_err(driver_error("allocate group norm partial sums"))?;
    let (group_len_arg, chunk_len) = (group_len as u64, split.chunk_len as u64);

    let stats = b.typed_kernel(KernelFile::Norm, "group_stats")?;
    let mut args = b.stream().launch_builder(&stats);
    args.tensor(x)
        .arg(&partials)
        .arg(&group_len_arg)
        .arg(&chunk_len);
    // SAFETY: x holds groups_total·group_len elements; partials 2 per block of the grid.
    unsafe { args.launch(cfg) }.map_err(driver_error("group_norm statistics"))?;

    let params = GroupNormShape {
        group_len: group_len as u64,
        chunk_len: split.chunk_len as u64,
        spatial: spatial as u64,
        groups: launch::to_u32("group_norm", "groups", groups)?,
        channels_per_group: launch::to_u32("group_norm", "channels per group", channels_per_group)?,
        eps,
        silu: i32::from(silu),
    };
    let apply = b.typed_kernel(KernelFile::Norm, "group_norm_apply")?;
    let mut args = b.stream().launch_builder(&apply);
    args.tensor(x)
        .tensor(&out)
        .arg(&partials)
        .tensor(gamma)
        .tensor(beta)
        .arg(&params);
    // SAFETY: as above; gamma and beta hold `channels` values, every channel index is below.
    unsafe { args.launch(cfg) }.map_err(driver_error("group_norm"))?;
    Ok(out)
}

pub(crate) fn layer_norm(
    b: &CudaBackend,
    x: &CudaTensor,
    gamma: &CudaTensor,
    beta: &CudaTensor,
    eps: f32,
) -> Result<CudaTensor> {
    b.expect_dtype("layer_norm", &[x, gamma, beta])?;
    let shape = x.shape();
    let width = shapes::layer_norm_width(shape, gamma.shape(), beta.shape())?;
    let out = b.uninit("layer_norm", shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let rows = x.numel() / width;
    let width_arg = launch::to_u32("layer_norm", "width", width)?;
    let f = b.typed_kernel(KernelFile::Norm, "layer_norm")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x)
        .tensor(&out)
        .tensor(gamma)
        .tensor(beta)
        .arg(&width_arg)
        .arg(&eps);
    // SAFETY: one block per row of `width` elements; gamma and beta hold `width`.
    unsafe { args.launch(launch::per_row("layer_norm", rows)?) }
        .map_err(driver_error("layer_norm"))?;
    Ok(out)
}

pub(crate) fn softmax(b: &CudaBackend, x: &CudaTensor) -> Result<CudaTensor> {
    b.expect_dtype("softmax", &[x])?;
    let shape = x.shape();
    let width = shapes::last_dim("softmax", shape)?;
    let out = b.uninit("softmax", shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let rows = x.numel() / width;
    let width_arg = launch::to_u32("softmax", "width", width)?;
    let f = b.typed_kernel(KernelFile::Norm, "softmax")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x).tensor(&out).arg(&width_arg);
    // SAFETY: one block per row of `width` elements.
    unsafe { args.launch(launch::per_row("softmax", rows)?) }.map_err(driver_error("softmax"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::GroupNormShape;

    #[test]
    fn group_norm_shape_matches_the_kernel_struct_layout() {
        // Three u64, two u32, an f32 and an int: 40 bytes, 8-aligned, as the C struct.
        assert_eq!(std::mem::size_of::<GroupNormShape>(), 40);
        assert_eq!(std::mem::align_of::<GroupNormShape>(), 8);
    }
}
