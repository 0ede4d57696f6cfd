//! Lanes: the rows of a batch that share one generator and hence one scheduler.
//!
//! diffusers draws a batch either from one generator (one lane over all rows) or from a list of
//! generators, one per image (one lane per row). A stochastic scheduler draws its step noise for
//! all rows it steps from one generator, so each lane gets its own scheduler instance too; the
//! schedulers' arithmetic is element-wise, so stepping lanes apart equals stepping the batch.

use std::ops::Range;

use ndarray::{Axis, Slice};

use super::request::Seeds;
use crate::components::Scheduler;
use crate::error::{Error, Result};
use crate::rng::{NormalSource, RngSource};
use crate::tensor::HostTensor;

/// Makes a fresh scheduler (same kind, same config) for each lane of a generation.
pub type SchedulerFactory<'a> = dyn Fn() -> Result<Box<dyn Scheduler>> + 'a;

pub(crate) struct Lane {
    pub generator: Box<dyn NormalSource>,
    pub scheduler: Box<dyn Scheduler>,
    /// The batch rows this lane owns.
    pub rows: Range<usize>,
}

impl Lane {
    /// The lanes of a batch seeded by `seeds` (generators of `source`), each scheduler
    /// prepared for `steps`.
    pub fn for_batch(
        source: RngSource,
        seeds: &Seeds,
        batch_size: usize,
        steps: usize,
        new_scheduler: &SchedulerFactory<'_>,
    ) -> Result<Vec<Lane>> {
        let groups: Vec<(u64, Range<usize>)> = match seeds {
            Seeds::Single(seed) => vec![(*seed, 0..batch_size)],
            Seeds::PerImage(seeds) => seeds
                .iter()
                .enumerate()
                .map(|(row, &seed)| (seed, row..row + 1))
                .collect(),
        };
        groups
            .into_iter()
            .map(|(seed, rows)| {
                let mut scheduler = new_scheduler()?;
                scheduler.set_timesteps(steps)?;
                Ok(Lane {
                    generator: source.generator(seed),
                    scheduler,
                    rows,
                })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// This lane's rows of a batch tensor.
    pub fn rows_of(&self, batch: &HostTensor) -> HostTensor {
        batch
            .slice_axis(Axis(0), Slice::from(self.rows.clone()))
            .to_owned()
    }

    /// Write `rows` back into this lane's rows of `batch`.
    pub fn store(&self, batch: &mut HostTensor, rows: &HostTensor) -> Result<()> {
        let mut target = batch.slice_axis_mut(Axis(0), Slice::from(self.rows.clone()));
        if target.shape() != rows.shape() {
            return Err(Error::shape(
                "scheduler step",
                format!(
                    "returned {:?} for latents of shape {:?}",
                    rows.shape(),
                    target.shape()
                ),
            ));
        }
        target.assign(rows);
        Ok(())
    }
}
