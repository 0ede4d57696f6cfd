//! A backend wrapper that times every op: where does a UNet step's time go?
//!
//! `Profiled::new(backend)` is itself a [`Backend`] with the same tensors, so any model runs on
//! it unchanged; the [`OpTimes::report`] of [`Profiled::times`] then lists wall time and call
//! count per op kind. Convs are told apart by kernel size and attention by self/cross, the
//! distinctions that matter when optimising SD. The times are wall time around each call, so
//! they are exact for a backend whose ops finish before returning (the CPU backend) and only
//! launch times for an asynchronous one (CUDA).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BinaryOp, Conv2dParams, TensorInfo, UnaryOp, WeightRole};
use crate::error::Result;
use crate::tensor::HostTensor;

/// One row of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpTime {
    /// The op kind ("conv2d 3×3", "attention self", "linear", …).
    pub op: String,
    pub calls: u64,
    pub total: Duration,
}

/// `inner`, timed op by op.
#[derive(Debug)]
pub struct Profiled<B> {
    inner: B,
    times: OpTimes,
}

/// The times a [`Profiled`] backend collects; a shared handle that stays readable after the
/// backend has moved into a model.
#[derive(Debug, Clone, Default)]
pub struct OpTimes(Arc<Mutex<BTreeMap<String, (u64, Duration)>>>);

impl OpTimes {
    /// Op kinds by total time, longest first.
    pub fn report(&self) -> Vec<OpTime> {
        let mut rows: Vec<OpTime> = self
            .lock()
            .iter()
            .map(|(op, &(calls, total))| OpTime {
                op: op.clone(),
                calls,
                total,
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.total));
        rows
    }

    /// Forget the times so far (e.g. after a warm-up run).
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, Duration)>> {
        // A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, op: String, elapsed: Duration) {
        let mut times = self.lock();
        let entry = times.entry(op).or_default();
        entry.0 += 1;
        entry.1 += elapsed;
    }
}

impl<B: Backend> Profiled<B> {
    pub fn new(inner: B) -> Self {
        Profiled {
            inner,
            times: OpTimes::default(),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// A handle on the times collected so far and from now on.
    pub fn times(&self) -> OpTimes {
        self.times.clone()
    }

    fn timed<T>(&self, op: impl Into<String>, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let value = f();
        self.times.add(op.into(), start.elapsed());
        value
    }
}

impl<B: Backend> Backend for Profiled<B> {
    type Tensor = B::Tensor;

    fn name(&self) -> String {
        format!("{} (profiled)", self.inner.name())
    }

    fn available_memory(&self) -> Option<u64> {
        self.inner.available_memory()
    }

    /// The inner backend's f32 twin, its times collected with this one's.
    fn full_precision(&self) -> Result<Option<Self>> {
        Ok(self.inner.full_precision()?.map(|inner| Profiled {
            inner,
            times: self.times.clone(),
        }))
    }

    fn upload(&self, host: &HostTensor) -> Result<Self::Tensor> {
        self.timed("upload", || self.inner.upload(host))
    }

    fn upload_weight(&self, host: &HostTensor, role: WeightRole) -> Result<Self::Tensor> {
        self.timed("upload_weight", || self.inner.upload_weight(host, role))
    }

    fn download(&self, t: &Self::Tensor) -> Result<HostTensor> {
        self.timed("download", || self.inner.download(t))
    }

    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor> {
        self.timed("reshape", || self.inner.reshape(x, shape))
    }

    fn permute(&self, x: &Self::Tensor, axes: &[usize]) -> Result<Self::Tensor> {
        self.timed("permute", || self.inner.permute(x, axes))
    }

    fn narrow(
        &self,
        x: &Self::Tensor,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Tensor> {
        self.timed("narrow", || self.inner.narrow(x, axis, start, len))
    }

    fn concat(&self, xs: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor> {
        self.timed("concat", || self.inner.concat(xs, axis))
    }

    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor> {
        self.timed("matmul", || self.inner.matmul(a, b))
    }

    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor> {
        self.timed("linear", || self.inner.linear(x, w, bias))
    }

    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        params: Conv2dParams,
    ) -> Result<Self::Tensor> {
        let kernel = w.shape().get(2..4).unwrap_or(&[]);
        let op = match (kernel, params.stride) {
            ([kh, kw], 1) => format!("conv2d {kh}×{kw}"),
            ([kh, kw], s) => format!("conv2d {kh}×{kw} stride {s}"),
            _ => "conv2d".to_string(),
        };
        self.timed(op, || self.inner.conv2d(x, w, bias, params))
    }

    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        heads: usize,
        scale: f32,
        causal: bool,
    ) -> Result<Self::Tensor> {
        let op = if q.shape().get(1) == k.shape().get(1) {
            "attention self"
        } else {
            "attention cross"
        };
        self.timed(op, || self.inner.attention(q, k, v, heads, scale, causal))
    }

    fn group_norm(
        &self,
        x: &Self::Tensor,
        groups: usize,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f32,
        silu: bool,
    ) -> Result<Self::Tensor> {
        let op = if silu {
            "group_norm+silu"
        } else {
            "group_norm"
        };
        self.timed(op, || {
            self.inner.group_norm(x, groups, gamma, beta, eps, silu)
        })
    }

    fn layer_norm(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor> {
        self.timed("layer_norm", || self.inner.layer_norm(x, gamma, beta, eps))
    }

    fn softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.timed("softmax", || self.inner.softmax(x))
    }

    fn unary(&self, x: &Self::Tensor, op: UnaryOp) -> Result<Self::Tensor> {
        self.timed(format!("{op:?}").to_lowercase(), || self.inner.unary(x, op))
    }

    fn geglu(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.timed("geglu", || self.inner.geglu(x))
    }

    fn binary(&self, a: &Self::Tensor, b: &Self::Tensor, op: BinaryOp) -> Result<Self::Tensor> {
        self.timed(format!("{op:?}").to_lowercase(), || {
            self.inner.binary(a, b, op)
        })
    }

    fn affine(&self, x: &Self::Tensor, mul: f32, add: f32) -> Result<Self::Tensor> {
        self.timed("affine", || self.inner.affine(x, mul, add))
    }

    fn upsample_nearest2x(&self, x: &Self::Tensor) -> Result<Self::Tensor> {
        self.timed("upsample", || self.inner.upsample_nearest2x(x))
    }

    fn embedding(
        &self,
        table: &Self::Tensor,
        ids: &[u32],
        ids_shape: &[usize],
    ) -> Result<Self::Tensor> {
        self.timed("embedding", || self.inner.embedding(table, ids, ids_shape))
    }
}

#[cfg(test)]
mod tests {
    use super::Profiled;
    use crate::Backend;
    use crate::cpu::CpuBackend;
    use crate::tensor::HostTensor;

    #[test]
    fn counts_each_op_kind_and_passes_results_through() {
        let b = Profiled::new(CpuBackend::new());
        let x = b.upload(&HostTensor::ones(vec![2, 3])).expect("upload");
        let y = b.add(&x, &x).expect("add");
        let y = b.add(&y, &x).expect("add");
        assert_eq!(b.download(&y).expect("download")[[1, 2]], 3.0);
        let times = b.times();
        let report = times.report();
        let add = report.iter().find(|r| r.op == "add").expect("add row");
        assert_eq!(add.calls, 2);
        assert!(report.iter().any(|r| r.op == "upload" && r.calls == 1));
        times.reset();
        assert!(b.times().report().is_empty());
    }
}
