//! Activations, GEGLU, scalar affine and broadcasting binary ops (kernels/elementwise.cu).

use cudarc::driver::PushKernelArg;
use sd_core::backend::broadcast_shape;
use sd_core::shapes::{self, GegluDims};
use sd_core::{BinaryOp, Error, Result, TensorInfo, UnaryOp};

use crate::backend::{CudaBackend, driver_error};
use crate::kernels::KernelFile;
use crate::launch::{self, Walk};
use crate::tensor::{CudaTensor, PushTensor};

/// The kernel's activation code (`ACT_*` in kernels/elementwise.cu).
fn activation_code(op: UnaryOp) -> i32 {
    match op {
        UnaryOp::Silu => 0,
        UnaryOp::Gelu => 1,
        UnaryOp::QuickGelu => 2,
        UnaryOp::Relu => 3,
        UnaryOp::Tanh => 4,
    }
}

/// The kernel's binary op code (`BIN_*` in kernels/elementwise.cu).
fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    }
}

fn op_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
    }
}

pub(crate) fn unary(b: &CudaBackend, x: &CudaTensor, op: UnaryOp) -> Result<CudaTensor> {
    b.expect_dtype("unary", &[x])?;
    let out = b.uninit("unary", x.shape())?;
    let n = x.numel() as u64;
    if n == 0 {
        return Ok(out);
    }
    let f = b.typed_kernel(KernelFile::Elementwise, "unary")?;
    let code = activation_code(op);
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x).tensor(&out).arg(&n).arg(&code);
    // SAFETY: x and out hold n elements of the kernel's storage type.
    unsafe { args.launch(launch::elementwise(n, b.sm_count())) }.map_err(driver_error("unary"))?;
    Ok(out)
}

pub(crate) fn affine(b: &CudaBackend, x: &CudaTensor, mul: f32, add: f32) -> Result<CudaTensor> {
    b.expect_dtype("affine", &[x])?;
    let out = b.uninit("affine", x.shape())?;
    let n = x.numel() as u64;
    if n == 0 {
        return Ok(out);
    }
    let f = b.typed_kernel(KernelFile::Elementwise, "affine")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x).tensor(&out).arg(&n).arg(&mul).arg(&add);
    // SAFETY: x and out hold n elements.
    unsafe { args.launch(launch::elementwise(n, b.sm_count())) }.map_err(driver_error("affine"))?;
    Ok(out)
}

pub(crate) fn geglu(b: &CudaBackend, x: &CudaTensor) -> Result<CudaTensor> {
    b.expect_dtype("geglu", &[x])?;
    let GegluDims {
        rows,
        half,
        out_shape,
    } = shapes::geglu_dims(x.shape())?;
    let out = b.uninit("geglu", &out_shape)?;
    let n = out.numel() as u64;
    if n == 0 {
        return Ok(out);
    }
    let rows = rows as u64;
    let half = half as u64;
    let f = b.typed_kernel(KernelFile::Elementwise, "geglu")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x).tensor(&out).arg(&rows).arg(&half);
    // SAFETY: x holds rows·2·half elements, out rows·half.
    unsafe { args.launch(launch::elementwise(n, b.sm_count())) }.map_err(driver_error("geglu"))?;
    Ok(out)
}

pub(crate) fn binary(
    b: &CudaBackend,
    x: &CudaTensor,
    y: &CudaTensor,
    op: BinaryOp,
) -> Result<CudaTensor> {
    let name = op_name(op);
    b.expect_dtype(name, &[x, y])?;
    let out_shape = broadcast_shape(x.shape(), y.shape()).ok_or_else(|| {
        Error::shape(
            name,
            format!(
                "shapes {:?} and {:?} do not broadcast",
                x.shape(),
                y.shape()
            ),
        )
    })?;
    let out = b.uninit(name, &out_shape)?;
    let n = out.numel() as u64;
    if n == 0 {
        return Ok(out);
    }
    let code = binary_code(op);
    let cfg = launch::elementwise(n, b.sm_count());
    if x.shape() == y.shape() {
        let f = b.typed_kernel(KernelFile::Elementwise, "binary_same")?;
        let mut args = b.stream().launch_builder(&f);
        args.tensor(x).tensor(y).tensor(&out).arg(&n).arg(&code);
        // SAFETY: x, y and out all hold n elements.
        unsafe { args.launch(cfg) }.map_err(driver_error(name))?;
        return Ok(out);
    }
    let walk = Walk::broadcast(&out_shape, x.shape(), y.shape())
        .pack()
        .ok_or_else(|| {
            Error::shape(
                name,
                format!(
                    "broadcasting {:?} with {:?} needs more than {} dims",
                    x.shape(),
                    y.shape(),
                    launch::MAX_DIMS
                ),
            )
        })?;
    let f = b.typed_kernel(KernelFile::Elementwise, "binary")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(x)
        .tensor(y)
        .tensor(&out)
        .arg(&n)
        .arg(&walk)
        .arg(&code);
    // SAFETY: the walk's strides address only elements inside x and y (it was built from
    // their shapes), and out holds n elements.
    unsafe { args.launch(cfg) }.map_err(driver_error(name))?;
    Ok(out)
}

/// In place `y += bias`, broadcast as `bias[(i / inner) % bias.len]`: a linear's bias
/// (`inner` = 1) or a conv's per-channel bias (`inner` = output positions). `y` must be a
/// tensor the caller just made and has not shared.
pub(crate) fn add_bias_in_place(
    b: &CudaBackend,
    y: &CudaTensor,
    bias: &CudaTensor,
    inner: usize,
) -> Result<()> {
    let n = y.numel() as u64;
    if n == 0 {
        return Ok(());
    }
    let (inner, channels) = (inner as u64, bias.numel() as u64);
    let f = b.typed_kernel(KernelFile::Elementwise, "add_bias")?;
    let mut args = b.stream().launch_builder(&f);
    args.tensor(y)
        .tensor(bias)
        .arg(&n)
        .arg(&inner)
        .arg(&channels);
    // SAFETY: every index (i / inner) % channels is inside bias; y holds n elements.
    unsafe { args.launch(launch::elementwise(n, b.sm_count())) }
        .map_err(driver_error("bias add"))?;
    Ok(())
}
