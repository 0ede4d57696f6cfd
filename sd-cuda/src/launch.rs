//! Launch shapes and kernel parameter blocks: pure host logic, tested without a device.

use cudarc::driver::{DeviceRepr, LaunchConfig};
use sd_core::{Error, Result};

/// Threads per block of every 1-D kernel (the norm kernels' shared scratch assumes it).
pub(crate) const THREADS: u32 = 256;

/// Grid-stride kernels need no more than this many resident blocks per SM to saturate memory
/// bandwidth; more blocks only add scheduling work.
const BLOCKS_PER_SM: u64 = 16;

/// A 1-D grid of [`THREADS`]-thread blocks for a grid-stride loop over `n` elements: one
/// element per thread, capped at [`BLOCKS_PER_SM`] blocks per SM (the loop covers the rest).
pub(crate) fn elementwise(n: u64, sm_count: u32) -> LaunchConfig {
    let wanted = n.div_ceil(u64::from(THREADS)).max(1);
    let cap = (u64::from(sm_count.max(1)) * BLOCKS_PER_SM).max(1);
    LaunchConfig {
        grid_dim: (u32::try_from(wanted.min(cap)).unwrap_or(u32::MAX), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One [`THREADS`]-thread block per row (layer norm, softmax).
pub(crate) fn per_row(op: &'static str, rows: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (grid_x(op, rows)?, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// CUDA's limits on grid sizes: 2³¹ − 1 blocks along x, 65535 along y and z.
const MAX_GRID_X: usize = (1 << 31) - 1;
const MAX_GRID_YZ: usize = 65_535;

pub(crate) fn grid_x(op: &'static str, blocks: usize) -> Result<u32> {
    if blocks > MAX_GRID_X {
        return Err(too_large(op, blocks, "x", MAX_GRID_X));
    }
    Ok(blocks as u32)
}

pub(crate) fn grid_yz(op: &'static str, blocks: usize) -> Result<u32> {
    if blocks > MAX_GRID_YZ {
        return Err(too_large(op, blocks, "y/z", MAX_GRID_YZ));
    }
    Ok(blocks as u32)
}

fn too_large(op: &'static str, blocks: usize, axis: &str, max: usize) -> Error {
    Error::shape(
        op,
        format!("needs {blocks} blocks along grid {axis}; CUDA allows {max}"),
    )
}

/// A size that a kernel takes as a 32-bit integer.
pub(crate) fn to_u32(op: &'static str, what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::shape(op, format!("{what} = {value} exceeds 2^32 − 1")))
}

/// Group norm's work split: each (sample, group) run of `group_len` values is cut into
/// `chunks` pieces of `chunk_len` (the last may be shorter), so that `groups_total · chunks`
/// blocks fill the GPU about four times over; a chunk is never under [`MIN_CHUNK`] values
/// unless the whole group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupSplit {
    pub chunks: usize,
    pub chunk_len: usize,
}

/// Small chunks would spend more on the partial sums than on the data.
const MIN_CHUNK: usize = 4096;

pub(crate) fn group_split(group_len: usize, groups_total: usize, sm_count: u32) -> GroupSplit {
    let target_blocks = 4 * sm_count.max(1) as usize;
    let wanted = target_blocks.div_ceil(groups_total.max(1));
    let most = group_len.div_ceil(MIN_CHUNK).max(1);
    let chunks = wanted.clamp(1, most.min(MAX_GRID_YZ));
    let chunk_len = group_len.div_ceil(chunks).max(1);
    GroupSplit {
        chunks: group_len.div_ceil(chunk_len).max(1),
        chunk_len,
    }
}

/// The most dims a strided walk takes (`MAX_DIMS` in kernels/common.cuh).
pub(crate) const MAX_DIMS: usize = 6;

/// `StridedWalk` of kernels/common.cuh: output dims, outermost first, and the element stride
/// of each operand along each (0 where broadcast). Permute uses `a_strides` for its source.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StridedWalk {
    pub dims: [u64; MAX_DIMS],
    pub a_strides: [u64; MAX_DIMS],
    pub b_strides: [u64; MAX_DIMS],
    pub rank: u32,
}

// SAFETY: plain integers in C layout, matching the kernel's struct field for field.
unsafe impl DeviceRepr for StridedWalk {}

/// Dims of a walk with per-operand strides, before packing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walk {
    pub dims: Vec<usize>,
    pub strides: Vec<[usize; 2]>,
}

impl Walk {
    /// Drop size-1 dims and merge each dim into its outer neighbour wherever both operands
    /// step through the pair contiguously. An empty walk (one element) becomes one dim of 1.
    fn merged(dims: &[usize], strides: &[[usize; 2]]) -> Walk {
        let mut walk = Walk {
            dims: Vec::new(),
            strides: Vec::new(),
        };
        for (&dim, &stride) in dims.iter().zip(strides) {
            if dim == 1 {
                continue;
            }
            if let (Some(last_dim), Some(last)) = (walk.dims.last_mut(), walk.strides.last_mut())
                && last[0] == stride[0] * dim
                && last[1] == stride[1] * dim
            {
                *last_dim *= dim;
                *last = stride;
                continue;
            }
            walk.dims.push(dim);
            walk.strides.push(stride);
        }
        if walk.dims.is_empty() {
            walk.dims.push(1);
            walk.strides.push([0, 0]);
        }
        walk
    }

    /// The walk of NumPy broadcasting `a ∘ b` into `out` (the broadcast shape).
    pub fn broadcast(out: &[usize], a: &[usize], b: &[usize]) -> Walk {
        let (sa, sb) = (strides_in(out, a), strides_in(out, b));
        let strides: Vec<[usize; 2]> = sa.into_iter().zip(sb).map(|(x, y)| [x, y]).collect();
        Walk::merged(out, &strides)
    }

    /// The walk of `permute(axes)` over a row-major `shape`: output dims with their source
    /// strides (in the first stride slot).
    pub fn permute(shape: &[usize], axes: &[usize]) -> Walk {
        let source = row_major_strides(shape);
        let dims: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
        let strides: Vec<[usize; 2]> = axes.iter().map(|&a| [source[a], 0]).collect();
        Walk::merged(&dims, &strides)
    }

    /// When the walk is a batched transpose, `(batch, rows, cols)` of the source
    /// `[batch, rows, cols]` whose output is `[batch, cols, rows]`.
    pub fn as_transpose(&self) -> Option<(usize, usize, usize)> {
        let s: Vec<usize> = self.strides.iter().map(|s| s[0]).collect();
        match (self.dims.as_slice(), s.as_slice()) {
            (&[n, m], &[1, sn]) if sn == n => Some((1, m, n)),
            (&[batch, n, m], &[sb, 1, sn]) if sn == n && sb == n * m => Some((batch, m, n)),
            _ => None,
        }
    }

    /// The kernel's parameter block; `None` when the walk has more than [`MAX_DIMS`] dims.
    pub fn pack(&self) -> Option<StridedWalk> {
        if self.dims.len() > MAX_DIMS {
            return None;
        }
        let mut packed = StridedWalk {
            dims: [1; MAX_DIMS],
            a_strides: [0; MAX_DIMS],
            b_strides: [0; MAX_DIMS],
            rank: self.dims.len() as u32,
        };
        for (i, (&dim, stride)) in self.dims.iter().zip(&self.strides).enumerate() {
            packed.dims[i] = dim as u64;
            packed.a_strides[i] = stride[0] as u64;
            packed.b_strides[i] = stride[1] as u64;
        }
        Some(packed)
    }
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Row-major strides of `shape` laid against the right end of `out`, 0 on broadcast dims.
fn strides_in(out: &[usize], shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let offset = out.len() - shape.len();
    let mut stride = 1;
    for (i, &dim) in shape.iter().enumerate().rev() {
        if dim != 1 {
            strides[offset + i] = stride;
        }
        stride *= dim;
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_grids_cover_small_inputs_and_cap_large_ones() {
        assert_eq!(elementwise(0, 132).grid_dim, (1, 1, 1));
        assert_eq!(elementwise(257, 132).grid_dim, (2, 1, 1));
        assert_eq!(elementwise(1 << 30, 132).grid_dim, (132 * 16, 1, 1));
        assert_eq!(elementwise(1 << 30, 0).grid_dim, (16, 1, 1));
    }

    #[test]
    fn grids_past_cuda_limits_are_shape_errors() {
        assert!(grid_yz("attention", 65_536).is_err());
        assert_eq!(grid_yz("attention", 65_535).ok(), Some(65_535));
        assert!(grid_x("softmax", 1 << 31).is_err());
        assert!(to_u32("x", "width", 1 << 32).is_err());
    }

    #[test]
    fn group_split_fills_the_gpu_without_tiny_chunks() {
        // SD 1.5 UNet at 64×64, batch 2: 64 groups of 10 channels × 4096.
        let s = group_split(40_960, 64, 132);
        assert_eq!(s.chunks, 9);
        assert!(s.chunks * s.chunk_len >= 40_960 && (s.chunks - 1) * s.chunk_len < 40_960);
        // A group smaller than a chunk stays whole.
        assert_eq!(
            group_split(100, 64, 132),
            GroupSplit {
                chunks: 1,
                chunk_len: 100
            }
        );
        // Plenty of groups: one chunk each.
        assert_eq!(group_split(1 << 20, 10_000, 132).chunks, 1);
        // Empty groups still get a well-formed launch.
        assert_eq!(
            group_split(0, 1, 132),
            GroupSplit {
                chunks: 1,
                chunk_len: 1
            }
        );
    }

    #[test]
    fn broadcast_walks_merge_contiguous_dims() {
        // [n, c, h, w] + [n, c, 1, 1] → rows of h·w with b repeated along them.
        let w = Walk::broadcast(&[2, 3, 4, 5], &[2, 3, 4, 5], &[2, 3, 1, 1]);
        assert_eq!(w.dims, vec![6, 20]);
        assert_eq!(w.strides, vec![[20, 1], [1, 0]]);
        // [rows, c] + [c].
        let w = Walk::broadcast(&[7, 8], &[7, 8], &[8]);
        assert_eq!(w.dims, vec![7, 8]);
        assert_eq!(w.strides, vec![[8, 0], [1, 1]]);
        // Same shapes collapse to one dim.
        let w = Walk::broadcast(&[2, 3, 4], &[2, 3, 4], &[2, 3, 4]);
        assert_eq!(w.dims, vec![24]);
        // A single element.
        let w = Walk::broadcast(&[1, 1], &[1], &[1, 1]);
        assert_eq!(w.dims, vec![1]);
        assert_eq!(w.strides, vec![[0, 0]]);
    }

    #[test]
    fn permute_walks_find_batched_transposes() {
        // [b, c, hw] → [b, hw, c]: the UNet's NCHW → tokens step.
        let w = Walk::permute(&[2, 320, 4096], &[0, 2, 1]);
        assert_eq!(w.as_transpose(), Some((2, 320, 4096)));
        // [b, c, h, w] → [b, h, w, c] merges h and w first.
        let w = Walk::permute(&[2, 3, 4, 5], &[0, 2, 3, 1]);
        assert_eq!(w.as_transpose(), Some((2, 3, 20)));
        // Plain 2-D transpose.
        let w = Walk::permute(&[3, 4], &[1, 0]);
        assert_eq!(w.as_transpose(), Some((1, 3, 4)));
        // Identity is a copy, not a transpose.
        let w = Walk::permute(&[3, 4], &[0, 1]);
        assert_eq!(w.dims, vec![12]);
        assert_eq!(w.as_transpose(), None);
        // Swapping the two outer dims of three is neither.
        let w = Walk::permute(&[2, 3, 4], &[1, 0, 2]);
        assert_eq!(w.dims, vec![3, 2, 4]);
        assert_eq!(w.strides, vec![[4, 0], [12, 0], [1, 0]]);
        assert_eq!(w.as_transpose(), None);
    }

    #[test]
    fn walks_pack_into_the_kernel_block_up_to_max_dims() {
        let w = Walk::permute(&[2, 3, 4], &[2, 0, 1]);
        let packed = w.pack().expect("fits");
        assert_eq!(packed.rank, 2);
        assert_eq!(&packed.dims[..2], &[4, 6]);
        assert_eq!(&packed.a_strides[..2], &[1, 4]);
        let deep = Walk {
            dims: vec![2; 7],
            strides: vec![[1, 1]; 7],
        };
        assert!(deep.pack().is_none());
    }

    #[test]
    fn strided_walk_matches_the_kernel_struct_layout() {
        // 3 arrays of 6 u64, then a u32 padded to 8: 152 bytes, as nvcc lays out the C struct.
        assert_eq!(std::mem::size_of::<StridedWalk>(), 152);
        assert_eq!(std::mem::align_of::<StridedWalk>(), 8);
    }
}
