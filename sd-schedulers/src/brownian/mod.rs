//! torchsde's `BrownianTree` (torchsde 0.2.6, `_brownian/brownian_interval.py` and `derived.py`)
//! on torch's CPU generator, and the noise sampler k-diffusion and diffusers build on it
//! (`BrownianTreeNoiseSampler`): the Brownian-motion noise of the DPM++ SDE samplers.
//!
//! What torchsde does, reproduced here step for step:
//! - The motion lives on `[t0, t1]` (σ_min and σ_max of the run). Every time is snapped to six
//!   decimals with Python's `round` (the tree's tolerance 1e-6; `decimal_round.rs`).
//! - The root's increment is `randn(shape) · √(t1 − t0)`, the generator seeded with the first
//!   word of numpy's `SeedSequence(entropy, pool_size=24).generate_state(3)`.
//! - Intervals form a binary tree split at (rounded) halves. A node's children come from a
//!   Brownian bridge on the parent's increment W: left = W·(m−s)/(e−s) + √((m−s)(e−m)/(e−s))·Z,
//!   right = W − left, with Z = `randn(shape)` seeded by the first word of
//!   `SeedSequence(entropy, spawn_key=(key, depth), pool_size=24).generate_state(4)`; the root has
//!   key 0 at depth 0, a child key 2·key + (0 left, 1 right) at depth + 1.
//! - A query `[ta, tb]` is the sum, left to right, of the largest tree nodes that tile it
//!   (torchsde finds them from its last query with a cached search; which node the search starts
//!   from, and its LRU cache, change nothing but speed: every node's value follows from its
//!   path).
//! - Tensor arithmetic is f32 with the Python-float factors rounded to f32 first, as torch
//!   multiplies an f32 tensor by a Python scalar.
//!
//! Only what the SDE samplers use is here: no Lévy area (`levy_area_approximation='none'`), the
//! halfway tree (`BrownianTree`), and queries as intervals.

mod decimal_round;
mod seed_sequence;

use std::collections::HashMap;

use sd_core::{Error, HostTensor, Result, TorchGenerator};

use decimal_round::{MAX_EXACT, round_micro};
use seed_sequence::SeedSequence;

/// `fixtures/goldens/a1111_sde.json` (written by tools/fixturegen/a1111_sde.py): the unit
/// goldens of numpy's `SeedSequence` and Python's `round`.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
fn golden_manifest() -> serde_json::Value {
    let path = sd_testkit::fixtures().join("goldens/a1111_sde.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// torchsde's `BrownianTree` default `pool_size`.
const POOL_SIZE: usize = 24;

/// Node values kept for later queries (torchsde keeps 45 in an LRU cache); values never depend
/// on it. Queries come in order of decreasing σ, so the nodes near the last query are the ones
/// reused.
const CACHE_LIMIT: usize = 64;

/// One interval of the tree; children once split.
#[derive(Debug, Clone)]
struct Node {
    start: f64,
    end: f64,
    parent: Option<usize>,
    is_left: bool,
    /// Set when the node is split: where, the seed of its bridge noise, its children.
    split: Option<Split>,
}

#[derive(Debug, Clone, Copy)]
struct Split {
    midway: f64,
    bridge_seed: u32,
    left: usize,
    right: usize,
}

/// A Brownian motion on `[t0, t1]` with fixed entropy: torchsde's `BrownianTree(t0, w0, t1,
/// entropy=seed)` for `w0` of `shape` in f32 on the CPU (see the module docs).
#[derive(Debug, Clone)]
pub struct BrownianTree {
    shape: Vec<usize>,
    entropy: u64,
    nodes: Vec<Node>,
    /// (spawn key, depth) of each node, parallel to `nodes`.
    keys: Vec<(u64, u64)>,
    root_increment: HostTensor,
    cache: HashMap<usize, HostTensor>,
}

impl BrownianTree {
    /// `torchsde.BrownianTree(t0, torch.zeros(shape), t1, entropy=entropy)`; `t0 < t1`.
    pub fn new(t0: f64, t1: f64, shape: &[usize], entropy: u64) -> Result<Self> {
        if !(t0.is_finite() && t1.is_finite() && t0 < t1) {
            return Err(Error::invalid_argument(
                "Brownian tree",
                format!("needs finite times t0 < t1, got [{t0}, {t1}]"),
            ));
        }
        if t0.abs() >= MAX_EXACT || t1.abs() >= MAX_EXACT {
            return Err(Error::invalid_argument(
                "Brownian tree",
                format!("times must be below {MAX_EXACT:e} in magnitude, got [{t0}, {t1}]"),
            ));
        }
        let root_seed = SeedSequence::new(entropy, &[], POOL_SIZE).generate_state(3)[0];
        let scale = (t1 - t0).sqrt() as f32;
        let root_increment = torch_randn(root_seed, shape).mapv_into(|z| z * scale);
        Ok(BrownianTree {
            shape: shape.to_vec(),
            entropy,
            nodes: vec![Node {
                start: round_micro(t0),
                end: round_micro(t1),
                parent: None,
                is_left: false,
                split: None,
            }],
            keys: vec![(0, 0)],
            root_increment,
            cache: HashMap::new(),
        })
    }

    /// The shape of each increment.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// `tree(ta, tb)`: the increment W(tb) − W(ta) for `ta ≤ tb`. Times outside the tree's
    /// interval are clamped to it, as torchsde does (with a warning there).
    pub fn increment(&mut self, ta: f64, tb: f64) -> Result<HostTensor> {
        let root = &self.nodes[0];
        let (ta, tb) = (
            ta.clamp(root.start, root.end),
            tb.clamp(root.start, root.end),
        );
        if ta.is_nan() || tb.is_nan() || ta > tb {
            return Err(Error::invalid_argument(
                "Brownian tree",
                format!("query times must satisfy ta ≤ tb, got ta={ta} and tb={tb}"),
            ));
        }
        if ta == tb {
            return Ok(HostTensor::zeros(ndarray::IxDyn(&self.shape)));
        }
        let (ta, tb) = (round_micro(ta), round_micro(tb));
        if ta == tb {
            // torchsde recurses without end here (a RecursionError).
            return Err(Error::invalid_argument(
                "Brownian tree",
                format!("query [{ta}, {tb}] is shorter than the tree's tolerance 1e-6"),
            ));
        }
        let mut pieces = Vec::new();
        self.tile(0, ta, tb, &mut pieces)?;
        let mut sum: Option<HostTensor> = None;
        for node in pieces {
            let value = self.value(node)?;
            sum = Some(match sum {
                None => value,
                Some(total) => total + &value,
            });
        }
        sum.ok_or_else(|| Error::invalid_argument("Brownian tree", "an empty query"))
    }

    /// Appends to `out`, left to right, the largest nodes under `node` that tile `[ta, tb]`
    /// (which `node` covers), splitting nodes as needed.
    fn tile(&mut self, node: usize, ta: f64, tb: f64, out: &mut Vec<usize>) -> Result<()> {
        let (start, end) = (self.nodes[node].start, self.nodes[node].end);
        if ta == start && tb == end {
            out.push(node);
            return Ok(());
        }
        let split = match self.nodes[node].split {
            Some(split) => split,
            None => self.split(node)?,
        };
        if tb <= split.midway {
            self.tile(split.left, ta, tb, out)
        } else if ta >= split.midway {
            self.tile(split.right, ta, tb, out)
        } else {
            self.tile(split.left, ta, split.midway, out)?;
            self.tile(split.right, split.midway, tb, out)
        }
    }

    /// Splits `node` at its rounded half (torchsde's `_split_exact` of the halfway tree).
    fn split(&mut self, node: usize) -> Result<Split> {
        let (start, end) = (self.nodes[node].start, self.nodes[node].end);
        let midway = round_micro(0.5 * (end + start));
        if !(start < midway && midway < end) {
            return Err(Error::invalid_argument(
                "Brownian tree",
                format!("cannot split [{start}, {end}] below the tolerance 1e-6"),
            ));
        }
        let (key, depth) = self.keys[node];
        let bridge_seed =
            SeedSequence::new(self.entropy, &[key, depth], POOL_SIZE).generate_state(4)[0];
        let child_depth = depth + 1;
        if child_depth >= 64 {
            return Err(Error::invalid_argument(
                "Brownian tree",
                "the tree is deeper than 63 levels",
            ));
        }
        let left = self.nodes.len();
        for (is_left, from, to, child_key) in [
            (true, start, midway, 2 * key),
            (false, midway, end, 2 * key + 1),
        ] {
            self.nodes.push(Node {
                start: from,
                end: to,
                parent: Some(node),
                is_left,
                split: None,
            });
            self.keys.push((child_key, child_depth));
        }
        let split = Split {
            midway,
            bridge_seed,
            left,
            right: left + 1,
        };
        self.nodes[node].split = Some(split);
        Ok(split)
    }

    /// The increment over `node`'s interval.
    fn value(&mut self, node: usize) -> Result<HostTensor> {
        // Walk up to the root or the nearest cached ancestor, then bridge back down.
        let mut path = Vec::new();
        let mut current = node;
        let mut value = loop {
            if let Some(cached) = self.cache.get(&current) {
                break cached.clone();
            }
            match self.nodes[current].parent {
                None => break self.root_increment.clone(),
                Some(parent) => {
                    path.push(current);
                    current = parent;
                }
            }
        };
        for &child in path.iter().rev() {
            value = self.bridge(child, &value)?;
            if self.cache.len() >= CACHE_LIMIT {
                self.cache.clear();
            }
            self.cache.insert(child, value.clone());
        }
        Ok(value)
    }

    /// A child's increment from its parent's (`parent_value`): the Brownian bridge.
    fn bridge(&self, child: usize, parent_value: &HostTensor) -> Result<HostTensor> {
        let node = &self.nodes[child];
        let parent = &self.nodes[node.parent.unwrap_or(0)];
        let split = parent.split.ok_or_else(|| {
            Error::invalid_argument("Brownian tree", "a child of an unsplit node")
        })?;
        let h_reciprocal = 1.0 / (parent.end - parent.start);
        let left_diff = split.midway - parent.start;
        let right_diff = parent.end - split.midway;
        let variance = left_diff * right_diff * h_reciprocal;
        let (left_scale, reciprocal_scale) = (left_diff as f32, h_reciprocal as f32);
        let noise_scale = variance.sqrt() as f32;
        let noise = torch_randn(split.bridge_seed, &self.shape);
        // mean = (W·(m−s))·(1/h); left = mean + √var·Z; right = W − left.
        let is_left = node.is_left;
        Ok(ndarray::Zip::from(parent_value)
            .and(&noise)
            .map_collect(|&w, &z| {
                let left = w * left_scale * reciprocal_scale + noise_scale * z;
                if is_left { left } else { w - left }
            }))
    }
}

/// `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))` (torchsde's `_randn`).
fn torch_randn(seed: u32, shape: &[usize]) -> HostTensor {
    TorchGenerator::new(u64::from(seed)).randn(shape)
}

/// k-diffusion's (and diffusers') `BrownianTreeNoiseSampler` over one tree: unit-variance noise
/// for a step from σ to σ_next, `(W(σ_next) − W(σ)) / √|σ_next − σ|`.
#[derive(Debug, Clone)]
pub struct BrownianNoise {
    tree: BrownianTree,
}

impl BrownianNoise {
    /// A sampler over `[sigma_min, sigma_max]` (the run's smallest positive σ and its largest)
    /// for noise of `shape`, its tree seeded with `seed`.
    pub fn new(sigma_min: f32, sigma_max: f32, shape: &[usize], seed: u64) -> Result<Self> {
        Ok(BrownianNoise {
            tree: BrownianTree::new(f64::from(sigma_min), f64::from(sigma_max), shape, seed)?,
        })
    }

    /// `noise_sampler(sigma, sigma_next)`.
    pub fn sample(&mut self, sigma: f32, sigma_next: f32) -> Result<HostTensor> {
        if sigma == sigma_next {
            return Err(Error::invalid_argument(
                "Brownian noise",
                format!("a step from σ = {sigma} to itself has no noise"),
            ));
        }
        // The tree answers [low, high]; a step towards lower σ is its negative.
        let (low, high, sign) = if sigma < sigma_next {
            (sigma, sigma_next, 1.0)
        } else {
            (sigma_next, sigma, -1.0)
        };
        let increment = self.tree.increment(f64::from(low), f64::from(high))?;
        let scale = (sigma_next - sigma).abs().sqrt();
        Ok(increment.mapv_into(|w| w * sign / scale))
    }

    /// The shape of each noise sample.
    pub fn shape(&self) -> &[usize] {
        self.tree.shape()
    }
}
