//! conv2d as im2col + cuBLAS GEMM (kernels/layout.cu's `im2col`).
//!
//! Per image the convolution is `out [o, positions] = w [o, c·kh·kw] · col [c·kh·kw, positions]`,
//! where column `q` of `col` holds the input patch under output position `q`. The `col` buffer
//! is bounded by [`COL_BUDGET_BYTES`]: several images share one batched GEMM when their columns
//! fit together, and a large image is cut into runs of output positions that each fit. A 1×1,
//! stride-1, unpadded conv multiplies the input directly (it is its own `col`).

use cudarc::driver::{DeviceRepr, PushKernelArg};
use sd_core::shapes::ConvShape;
use sd_core::{Conv2dParams, Result, TensorInfo};

use super::elementwise::add_bias_in_place;
use super::gemm::{self, Layout, Pointers, RowMajorProduct};
use crate::backend::{CudaBackend, driver_error};
use crate::kernels::KernelFile;
use crate::launch;
use crate::tensor::CudaTensor;

/// Scratch for im2col columns: large enough that SD's UNet convs run a whole batch per GEMM,
/// small next to the activations of a 512² VAE decode.
const COL_BUDGET_BYTES: usize = 256 << 20;

/// `Im2colGeometry` of kernels/layout.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Im2colGeometry {
    channels: u32,
    in_h: u32,
    in_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    padding: u32,
    out_w: u32,
    first_position: u32,
    positions: u32,
}

// SAFETY: plain u32s in C layout, matching the kernel's struct.
unsafe impl DeviceRepr for Im2colGeometry {}

/// How the im2col work is cut to fit the column budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ColumnPlan {
    /// Images whose columns are built together and multiplied in one batched GEMM.
    images_per_call: usize,
    /// Output positions per run (all of them unless one image's columns exceed the budget).
    positions_per_run: usize,
}

fn plan_columns(shape: &ConvShape, element_bytes: usize, budget: usize) -> ColumnPlan {
    let column_bytes = (shape.patch_len() * element_bytes).max(1);
    let image_bytes = column_bytes * shape.positions();
    if image_bytes <= budget {
        ColumnPlan {
            images_per_call: (budget / image_bytes.max(1)).clamp(1, shape.images.max(1)),
            positions_per_run: shape.positions(),
        }
    } else {
        ColumnPlan {
            images_per_call: 1,
            positions_per_run: (budget / column_bytes).max(1),
        }
    }
}

pub(crate) fn conv2d(
    b: &CudaBackend,
    x: &CudaTensor,
    w: &CudaTensor,
    bias: Option<&CudaTensor>,
    params: Conv2dParams,
) -> Result<CudaTensor> {
    b.expect_dtype("conv2d", &[x, w])?;
    if let Some(bias) = bias {
        b.expect_dtype("conv2d", &[bias])?;
    }
    let shape = ConvShape::check(x.shape(), w.shape(), bias.map(|t| t.shape()), params)?;
    let out_shape = shape.out_shape();
    if shape.patch_len() == 0 {
        // No input channels: the products are empty sums.
        let out = b.zeros("conv2d", &out_shape)?;
        if let Some(bias) = bias {
            add_bias_in_place(b, &out, bias, shape.positions())?;
        }
        return Ok(out);
    }
    let out = b.uninit("conv2d", &out_shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    if shape.is_pointwise() {
        pointwise(b, x, w, &out, &shape)?;
    } else {
        through_columns(b, x, w, &out, &shape)?;
    }
    if let Some(bias) = bias {
        add_bias_in_place(b, &out, bias, shape.positions())?;
    }
    Ok(out)
}

/// 1×1: `out[i] = w · x[i]` with `x[i]` as the `[c, h·w]` column matrix, one batched GEMM.
fn pointwise(
    b: &CudaBackend,
    x: &CudaTensor,
    w: &CudaTensor,
    out: &CudaTensor,
    s: &ConvShape,
) -> Result<()> {
    let (k, positions) = (s.channels, s.positions());
    let product = RowMajorProduct {
        m: s.out_channels,
        n: positions,
        k,
        batch: s.images,
        a: Layout::rows(k, 0),
        b: Layout::rows(positions, k * positions),
        c: Layout::rows(positions, s.out_channels * positions),
        alpha: 1.0,
        beta: 0.0,
    };
    let stream = b.stream();
    let ptrs = Pointers {
        a: (w.device_ptr(stream), w.dtype()),
        b: (x.device_ptr(stream), x.dtype()),
        c: (out.device_ptr(stream), out.dtype()),
    };
    // SAFETY: w is [o, c], x [n, c, positions], out [n, o, positions].
    unsafe { gemm::run(b, &product, ptrs) }
}

fn through_columns(
    b: &CudaBackend,
    x: &CudaTensor,
    w: &CudaTensor,
    out: &CudaTensor,
    s: &ConvShape,
) -> Result<()> {
    let (k, positions) = (s.patch_len(), s.positions());
    let plan = plan_columns(s, b.dtype().size_in_bytes(), COL_BUDGET_BYTES);
    let col = b.uninit("conv2d", &[plan.images_per_call, k, plan.positions_per_run])?;
    let im2col = b.typed_kernel(KernelFile::Layout, "im2col")?;
    let u32_of = |what, v| launch::to_u32("conv2d", what, v);
    let mut geometry = Im2colGeometry {
        channels: u32_of("channels", s.channels)?,
        in_h: u32_of("height", s.in_h)?,
        in_w: u32_of("width", s.in_w)?,
        kernel_h: u32_of("kernel height", s.kernel_h)?,
        kernel_w: u32_of("kernel width", s.kernel_w)?,
        stride: u32_of("stride", s.params.stride)?,
        padding: u32_of("padding", s.params.padding)?,
        out_w: u32_of("output width", s.out_w)?,
        first_position: 0,
        positions: 0,
    };
    u32_of("output positions", positions)?;
    let stream = b.stream();
    let (x_ptr, w_ptr, out_ptr, col_ptr) = (
        x.device_ptr(stream),
        w.device_ptr(stream),
        out.device_ptr(stream),
        col.device_ptr(stream),
    );
    let image_len = s.channels * s.in_h * s.in_w;
    let elem = b.dtype().size_in_bytes() as u64;

    for first_image in (0..s.images).step_by(plan.images_per_call) {
        let images = plan.images_per_call.min(s.images - first_image);
        for first_position in (0..positions).step_by(plan.positions_per_run) {
            let run = plan.positions_per_run.min(positions - first_position);
            geometry.first_position = first_position as u32;
            geometry.positions = run as u32;
            for i in 0..images {
                // Raw addresses: a kernel's pointer parameter is the 64-bit device address.
                let image = x_ptr + ((first_image + i) * image_len) as u64 * elem;
                let dst = col_ptr + (i * k * run) as u64 * elem;
                let n = (k * run) as u64;
                let mut args = stream.launch_builder(&im2col);
                args.arg(&image).arg(&dst).arg(&geometry);
                // SAFETY: `image` addresses one [c, h, w] image of x and `dst` k·run elements
                // inside col; the geometry's indices stay inside both.
                unsafe { args.launch(launch::elementwise(n, b.sm_count())) }
                    .map_err(driver_error("im2col"))?;
            }
            let product = RowMajorProduct {
                m: s.out_channels,
                n: run,
                k,
                batch: images,
                a: Layout::rows(k, 0),
                b: Layout::rows(run, k * run),
                c: Layout {
                    offset: first_position,
                    ld: positions,
                    batch_stride: s.out_channels * positions,
                    transposed: false,
                },
                alpha: 1.0,
                beta: 0.0,
            };
            let out_at = out_ptr + (first_image * s.out_channels * positions) as u64 * elem;
            let ptrs = Pointers {
                a: (w_ptr, w.dtype()),
                b: (col_ptr, col.dtype()),
                c: (out_at, out.dtype()),
            };
            // SAFETY: col holds `images` column blocks of k·run; out's window for these images
            // and positions lies inside out.
            unsafe { gemm::run(b, &product, ptrs) }?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    fn shape(images: usize, c: usize, hw: usize, o: usize, k: usize, stride: usize) -> ConvShape {
        ConvShape::check(
            &[images, c, hw, hw],
            &[o, c, k, k],
            None,
            Conv2dParams {
                stride,
                padding: k / 2,
            },
        )
        .expect("valid")
    }

    #[test]
    fn output_sizes_follow_the_convolution_formula() {
        let s = shape(2, 320, 64, 320, 3, 1);
        assert_eq!((s.out_h, s.out_w), (64, 64));
        let s = shape(2, 320, 64, 320, 3, 2);
        assert_eq!((s.out_h, s.out_w), (32, 32));
        assert!(shape(1, 4, 8, 4, 1, 1).is_pointwise());
        assert!(!shape(1, 4, 8, 4, 3, 1).is_pointwise());
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_problem() {
        let p = Conv2dParams::same(1);
        let err = ConvShape::check(&[1, 3, 8, 8], &[4, 2, 3, 3], None, p).unwrap_err();
        assert!(err.to_string().contains("input channels"), "{err}");
        let err = ConvShape::check(&[1, 3, 8, 8], &[4, 3, 3, 3], Some(&[5]), p).unwrap_err();
        assert!(err.to_string().contains("bias"), "{err}");
        let zero_stride = Conv2dParams {
            stride: 0,
            padding: 1,
        };
        assert!(ConvShape::check(&[1, 3, 8, 8], &[4, 3, 3, 3], None, zero_stride).is_err());
        let err = ConvShape::check(&[1, 3, 2, 2], &[4, 3, 5, 5], None, Conv2dParams::same(0))
            .unwrap_err();
        assert!(err.to_string().contains("kernel larger"), "{err}");
    }

    #[test]
    fn column_plans_batch_small_images_and_split_large_ones() {
        // UNet 64×64, 320 channels, f16: 23.6 MB of columns per image, both images together.
        let s = shape(2, 320, 64, 320, 3, 1);
        assert_eq!(
            plan_columns(&s, 2, COL_BUDGET_BYTES),
            ColumnPlan {
                images_per_call: 2,
                positions_per_run: 4096
            }
        );
        // VAE decoder at 512², 128 channels: one image needs 604 MB; runs of positions fit.
        let s = shape(1, 128, 512, 128, 3, 1);
        let plan = plan_columns(&s, 2, COL_BUDGET_BYTES);
        assert_eq!(plan.images_per_call, 1);
        assert!(plan.positions_per_run * s.patch_len() * 2 <= COL_BUDGET_BYTES);
        assert!(plan.positions_per_run < s.positions());
        // A budget below one column still makes progress.
        assert_eq!(plan_columns(&s, 2, 1).positions_per_run, 1);
    }

    #[test]
    fn im2col_geometry_matches_the_kernel_struct_layout() {
        assert_eq!(std::mem::size_of::<Im2colGeometry>(), 40);
    }
}
