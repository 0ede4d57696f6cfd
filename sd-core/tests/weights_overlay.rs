//! Overlays on a weight store: what model code reads is the base's tensor through every overlay
//! that touches it, bottom to top; tensors no overlay touches come straight from the base.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sd_core::weights::{Component, Overlay, WeightStore};
use sd_core::{Error, HostTensor, Result};
use sd_testkit::pipeline;

const Q_PROJ: &str = "text_model.encoder.layers.0.self_attn.q_proj.weight";

/// Adds a constant to named tensors, or makes them (filled with the constant) when absent.
#[derive(Debug, Default)]
struct AddConstant {
    targets: BTreeMap<String, (f32, Vec<usize>)>,
    applied: AtomicUsize,
}

impl AddConstant {
    fn on(name: &str, value: f32, shape: &[usize]) -> Self {
        let mut overlay = Self::default();
        overlay
            .targets
            .insert(name.to_string(), (value, shape.to_vec()));
        overlay
    }
}

impl Overlay for AddConstant {
    fn describe(&self) -> String {
        "add-constant test overlay".into()
    }

    fn touches(&self, component: Component, name: &str) -> bool {
        component == Component::TextEncoder && self.targets.contains_key(name)
    }

    fn apply(&self, _: Component, name: &str, below: Option<HostTensor>) -> Result<HostTensor> {
        self.applied.fetch_add(1, Ordering::Relaxed);
        let (value, shape) = &self.targets[name];
        Ok(match below {
            Some(tensor) => tensor.mapv(|v| v + value),
            None => HostTensor::from_elem(shape.clone(), *value),
        })
    }
}

/// Doubles every tensor it touches (any name ending in `q_proj.weight`).
#[derive(Debug)]
struct Double;

impl Overlay for Double {
    fn describe(&self) -> String {
        "doubling test overlay".into()
    }

    fn touches(&self, _: Component, name: &str) -> bool {
        name.ends_with("q_proj.weight")
    }

    fn apply(&self, _: Component, name: &str, below: Option<HostTensor>) -> Result<HostTensor> {
        let below = below.ok_or_else(|| Error::invalid_argument(name, "nothing to double"))?;
        Ok(below.mapv(|v| 2.0 * v))
    }
}

fn tiny_store() -> WeightStore {
    WeightStore::open(pipeline("tiny-sd")).unwrap()
}

fn q_proj_shape(store: &WeightStore) -> Vec<usize> {
    store
        .text_encoder()
        .unwrap()
        .info(Q_PROJ)
        .unwrap()
        .shape
        .clone()
}

#[test]
fn an_overlay_changes_the_tensors_it_touches_and_nothing_else() {
    let base = tiny_store();
    let shape = q_proj_shape(&base);
    let overlay = Arc::new(AddConstant::on(Q_PROJ, 0.5, &shape));
    let layered = base.with_overlay(overlay.clone());

    let below = base
        .text_encoder()
        .unwrap()
        .get_shaped(Q_PROJ, &shape)
        .unwrap();
    let seen = layered
        .text_encoder()
        .unwrap()
        .get_shaped(Q_PROJ, &shape)
        .unwrap();
    assert_eq!(seen, below.mapv(|v| v + 0.5));
    assert_eq!(overlay.applied.load(Ordering::Relaxed), 1);

    let k_proj = "text_model.encoder.layers.0.self_attn.k_proj.weight";
    assert_eq!(
        layered
            .text_encoder()
            .unwrap()
            .get_shaped(k_proj, &shape)
            .unwrap(),
        base.text_encoder()
            .unwrap()
            .get_shaped(k_proj, &shape)
            .unwrap()
    );
    assert_eq!(
        overlay.applied.load(Ordering::Relaxed),
        1,
        "k_proj went through it"
    );
    // The base store is untouched, and shares its files with the layered one.
    assert_eq!(base.overlays().len(), 0);
    assert_eq!(layered.files().count(), base.files().count());
}

#[test]
fn overlays_apply_bottom_to_top() {
    let base = tiny_store();
    let shape = q_proj_shape(&base);
    let below = base
        .text_encoder()
        .unwrap()
        .get_shaped(Q_PROJ, &shape)
        .unwrap();
    let add_then_double = base
        .with_overlay(Arc::new(AddConstant::on(Q_PROJ, 1.0, &shape)))
        .with_overlay(Arc::new(Double));
    let seen = add_then_double
        .text_encoder()
        .unwrap()
        .get_shaped(Q_PROJ, &shape)
        .unwrap();
    assert_eq!(seen, below.mapv(|v| 2.0 * (v + 1.0)));
}

#[test]
fn an_overlay_can_add_a_tensor_the_base_lacks() {
    let name = "text_model.embeddings.extra_rows";
    let base = tiny_store();
    assert!(!base.text_encoder().unwrap().contains(name));
    let layered = base.with_overlay(Arc::new(AddConstant::on(name, 3.0, &[2, 4])));
    let weights = layered.text_encoder().unwrap();
    assert!(weights.contains(name));
    assert_eq!(
        weights.get_shaped(name, &[2, 4]).unwrap(),
        HostTensor::from_elem(vec![2, 4], 3.0)
    );
    // An overlay that cannot make what is asked fails with its own error.
    let doubled = base.with_overlay(Arc::new(Double));
    let err = doubled
        .text_encoder()
        .unwrap()
        .get_shaped("text_model.missing.q_proj.weight", &[4, 4])
        .unwrap_err();
    assert!(err.to_string().contains("nothing to double"), "{err}");
}

#[test]
fn an_overlay_of_the_wrong_shape_is_a_typed_error_naming_it() {
    let base = tiny_store();
    let shape = q_proj_shape(&base);
    // The overlay adds a [3, 3] tensor where the model asks for q_proj's shape.
    let name = "text_model.encoder.layers.0.self_attn.extra.weight";
    let layered = base.with_overlay(Arc::new(AddConstant::on(name, 1.0, &[3, 3])));
    let err = layered
        .text_encoder()
        .unwrap()
        .get_shaped(name, &shape)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::TensorShape { .. }), "{text}");
    assert!(
        text.contains("add-constant test overlay") && text.contains(name),
        "{text}"
    );
}

#[test]
fn synthetic_weights_take_overlays_too() {
    let base = WeightStore::synthetic(7);
    let shape = [8, 8];
    let below = base
        .text_encoder()
        .unwrap()
        .get_shaped(Q_PROJ, &shape)
        .unwrap();
    let layered = base.with_overlay(Arc::new(Double));
    let seen = layered
        .text_encoder()
        .unwrap()
        .get_shaped(Q_PROJ, &shape)
        .unwrap();
    assert_eq!(seen, below.mapv(|v| 2.0 * v));
}
