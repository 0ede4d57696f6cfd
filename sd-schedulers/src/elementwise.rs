//! Element-wise arithmetic over host latents, and the argument checks every `step` makes.
//!
//! diffusers evaluates each formula as a chain of f32 torch ops; a closure that does the same
//! f32 operations in the same order per element gives the same bits (Rust never fuses a
//! multiply and an add behind our back).

use ndarray::Zip;
use sd_core::{Error, HostTensor, Result};

/// `f(a, b)` per element; `a` and `b` must have one shape.
pub(crate) fn map2(
    op: &'static str,
    a: &HostTensor,
    b: &HostTensor,
    f: impl Fn(f32, f32) -> f32,
) -> Result<HostTensor> {
    same_shape(op, a, b)?;
    Ok(Zip::from(a).and(b).map_collect(|&x, &y| f(x, y)))
}

/// `f(a, b, c)` per element; all three must have one shape.
pub(crate) fn map3(
    op: &'static str,
    a: &HostTensor,
    b: &HostTensor,
    c: &HostTensor,
    f: impl Fn(f32, f32, f32) -> f32,
) -> Result<HostTensor> {
    same_shape(op, a, b)?;
    same_shape(op, a, c)?;
    Ok(Zip::from(a)
        .and(b)
        .and(c)
        .map_collect(|&x, &y, &z| f(x, y, z)))
}

/// `clip_sample`: clamp x̂₀ to [−range, range] (no-op for `None`).
pub(crate) fn clip(original: HostTensor, range: Option<f32>) -> HostTensor {
    match range {
        Some(r) => original.mapv_into(|v| v.clamp(-r, r)),
        None => original,
    }
}

fn same_shape(op: &'static str, a: &HostTensor, b: &HostTensor) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!(
                "tensors must have one shape, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        ))
    }
}

/// `index` must name one of the `len` timesteps of the current schedule.
pub(crate) fn check_index(index: usize, len: usize) -> Result<()> {
    if index < len {
        Ok(())
    } else if len == 0 {
        Err(Error::invalid_argument(
            "index",
            "no timesteps yet: call set_timesteps first",
        ))
    } else {
        Err(Error::invalid_argument(
            "index",
            format!("{index} is past the last of {len} timesteps"),
        ))
    }
}

/// What every `step` checks before touching its state: `index` names a timestep and the model
/// output has the sample's shape.
pub(crate) fn check_step(
    index: usize,
    len: usize,
    model_output: &HostTensor,
    sample: &HostTensor,
) -> Result<()> {
    check_index(index, len)?;
    same_shape("scheduler step", model_output, sample)
}

/// Inference steps must be at least 1 and at most the number of training timesteps.
pub(crate) fn check_steps(steps: usize, num_train_timesteps: usize) -> Result<()> {
    if steps == 0 {
        Err(Error::invalid_argument("steps", "must be at least 1"))
    } else if steps > num_train_timesteps {
        Err(Error::invalid_argument(
            "steps",
            format!(
                "{steps} is more than the {num_train_timesteps} timesteps the model was trained with"
            ),
        ))
    } else {
        Ok(())
    }
}
