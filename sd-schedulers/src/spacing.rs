//! Inference timesteps picked from the training timesteps (`timestep_spacing`), in the three
//! shapes diffusers' scheduler families use, computed as numpy computes them.

use crate::config::TimestepSpacing;

/// Integer timesteps, descending: DDIM, DDPM and (reversed, before PLMS reordering) PNDM.
///
/// For T = 1000 and 10 steps: leading (offset 1) 901, 801, …, 1; trailing 999, 899, …, 99;
/// linspace 999, 888, …, 0.
pub(crate) fn discrete(
    spacing: TimestepSpacing,
    train: usize,
    steps: usize,
    offset: i64,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Linspace => numpy_linspace(0.0, (train - 1) as f64, steps)
            .iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (train / steps) as i64;
            (0..steps as i64)
                .rev()
                .map(|i| i * ratio + offset)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(train, train as f64 / steps as f64),
    }
}

/// Float timesteps, descending: the k-diffusion family (Euler, Euler a, LMS, Heun). Linspace
/// keeps fractions (25 steps: 999, 957.375, …).
pub(crate) fn continuous(
    spacing: TimestepSpacing,
    train: usize,
    steps: usize,
    offset: i64,
) -> Vec<f32> {
    match spacing {
        TimestepSpacing::Linspace => numpy_linspace(0.0, (train - 1) as f64, steps)
            .iter()
            .rev()
            .map(|&t| t as f32)
            .collect(),
        TimestepSpacing::Leading | TimestepSpacing::Trailing => {
            discrete(spacing, train, steps, offset)
                .into_iter()
                .map(|t| t as f32)
                .collect()
        }
    }
}

/// Integer timesteps of the multistep solvers (DPM-Solver, UniPC): `steps + 1` points with the
/// last (t = 0) dropped, so linspace gives 999, 899, …, 100 for 10 steps.
pub(crate) fn multistep(
    spacing: TimestepSpacing,
    train: usize,
    steps: usize,
    offset: i64,
) -> Vec<i64> {
    match spacing {
        TimestepSpacing::Linspace => numpy_linspace(0.0, (train - 1) as f64, steps + 1)
            .iter()
            .rev()
            .take(steps)
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (train / (steps + 1)) as i64;
            (1..=steps as i64)
                .rev()
                .map(|i| i * ratio + offset)
                .collect()
        }
        TimestepSpacing::Trailing => trailing(train, train as f64 / steps as f64),
    }
}

/// `round(arange(T, 0, −ratio)) − 1`.
fn trailing(train: usize, ratio: f64) -> Vec<i64> {
    numpy_arange(train as f64, 0.0, -ratio)
        .iter()
        .map(|t| t.round_ties_even() as i64 - 1)
        .collect()
}

/// `numpy.linspace(start, stop, num)` in f64: `i·step + start`, the last value exactly `stop`.
pub(crate) fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    (0..num)
        .map(|i| {
            if i == num - 1 {
                stop
            } else {
                i as f64 * step + start
            }
        })
        .collect()
}

/// `numpy.arange(start, stop, step)` for floats: numpy derives the increment from its first two
/// values, `(start + step) − start`, which can differ from `step` in the last bit.
fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}
