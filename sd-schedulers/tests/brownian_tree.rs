//! The Brownian tree and the noise sampler against torchsde 0.2.6 and k-diffusion
//! (`fixtures/goldens/brownian_tree.safetensors`, written by `tools/fixturegen/a1111_sde.py`):
//! every tree increment bit for bit; the noise sampler's values within one ulp, because it
//! divides by `√|σ_next − σ|` and torch's f32 `sqrt` (the reference build's, the same with
//! `ATEN_CPU_CAPABILITY=default`) is not IEEE's correctly rounded square root: it is one ulp
//! off on about 18% of inputs, which this crate (IEEE `f32::sqrt`) does not imitate.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_core::HostTensor;
use sd_schedulers::{BrownianNoise, BrownianTree};
use sd_testkit::Goldens;
use serde_json::Value;

fn manifest() -> Value {
    let path = sd_testkit::fixtures().join("goldens/a1111_sde.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn goldens() -> Goldens {
    Goldens::open("", "brownian_tree.safetensors")
}

fn usizes(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

/// Every element within `ulps` units in the last place (0: the same bits).
fn assert_within_ulps(what: &str, ours: &HostTensor, expected: &HostTensor, ulps: u32) {
    assert_eq!(ours.shape(), expected.shape(), "{what}: shape");
    for (i, (a, b)) in ours.iter().zip(expected.iter()).enumerate() {
        let apart = (a.to_bits() as i32).abs_diff(b.to_bits() as i32);
        assert!(
            apart <= ulps && a.is_sign_negative() == b.is_sign_negative(),
            "{what}: element {i}: {a} vs torchsde {b}"
        );
    }
}

/// Each case: the tree over [t0, t1] (given to torchsde as f32 tensors) asked its queries in
/// order, including queries past the ends (clamped), repeated and empty ones.
#[test]
fn tree_increments_equal_torchsde() {
    let manifest = manifest();
    let goldens = goldens();
    for (case, spec) in manifest["trees"].as_array().unwrap().iter().enumerate() {
        let t0 = f64::from(spec["t0"].as_f64().unwrap() as f32);
        let t1 = f64::from(spec["t1"].as_f64().unwrap() as f32);
        let shape = usizes(&spec["shape"]);
        let entropy = spec["entropy"].as_u64().unwrap();
        let mut tree = BrownianTree::new(t0, t1, &shape, entropy).unwrap();
        for (q, query) in spec["queries"].as_array().unwrap().iter().enumerate() {
            let (ta, tb) = (query[0].as_f64().unwrap(), query[1].as_f64().unwrap());
            let ours = tree.increment(ta, tb).unwrap();
            let expected = goldens.host(&format!("tree/{case}/{q}"));
            let what = format!("case {case} query {q} [{ta}, {tb}]");
            assert_within_ulps(&what, &ours, &expected, 0);
        }
    }
}

/// k-diffusion's sampler as A1111 builds it with two seeds is two trees, one per image: here
/// one `BrownianNoise` per seed, stacked.
#[test]
fn noise_sampler_equals_k_diffusion_per_image_trees() {
    let manifest = manifest();
    let spec = &manifest["noise_sampler"];
    let goldens = goldens();
    let shape = usizes(&spec["shape"]);
    let image_shape = &shape[1..];
    let (sigma_min, sigma_max) = (
        spec["sigma_min"].as_f64().unwrap() as f32,
        spec["sigma_max"].as_f64().unwrap() as f32,
    );
    let mut samplers: Vec<BrownianNoise> = usizes(&spec["seeds"])
        .into_iter()
        .map(|seed| BrownianNoise::new(sigma_min, sigma_max, image_shape, seed as u64).unwrap())
        .collect();
    for (i, pair) in spec["pairs"].as_array().unwrap().iter().enumerate() {
        let (sigma, next) = (
            pair[0].as_f64().unwrap() as f32,
            pair[1].as_f64().unwrap() as f32,
        );
        let expected = goldens.host(&format!("noise_sampler/{i}"));
        for (image, sampler) in samplers.iter_mut().enumerate() {
            let ours = sampler.sample(sigma, next).unwrap();
            let theirs = expected.index_axis(ndarray::Axis(0), image).to_owned();
            assert_within_ulps(&format!("step {i} image {image}"), &ours, &theirs, 1);
        }
    }
}

#[test]
fn bad_trees_and_queries_are_refused() {
    assert!(BrownianTree::new(1.0, 1.0, &[2], 0).is_err());
    assert!(BrownianTree::new(2.0, 1.0, &[2], 0).is_err());
    assert!(BrownianTree::new(0.0, f64::NAN, &[2], 0).is_err());
    let mut tree = BrownianTree::new(0.0, 1.0, &[2], 0).unwrap();
    let err = tree.increment(0.5, 0.25).unwrap_err().to_string();
    assert!(err.contains("ta ≤ tb"), "{err}");
    let err = tree.increment(0.5, 0.5000001).unwrap_err().to_string();
    assert!(err.contains("tolerance"), "{err}");
    let mut noise = BrownianNoise::new(0.1, 10.0, &[2], 0).unwrap();
    assert!(noise.sample(1.0, 1.0).is_err());
}
