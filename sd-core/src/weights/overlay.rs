//! [`Overlay`]: a change to named tensors, applied when model code reads them.
//!
//! A [`WeightStore`](super::WeightStore) is a base (a checkpoint, or synthetic weights) under a
//! stack of overlays. Each tensor a layer asks for goes through the overlays that
//! [touch](Overlay::touches) it, bottom to top, in f32, *before* the layer hands it to the
//! backend, so a CPU bf16 packing or a GPU upload sees the merged weight. A model rebuilt from
//! the same store (the low-memory [`OnDemand`](crate::on_demand::OnDemand) rebuild) reads
//! through the same overlays, so it comes back with them applied.
//!
//! What goes here: LoRA and LyCORIS deltas (`W + scale · up · down`), a replacement tensor (a
//! different VAE's weights), a textual-inversion row appended to an embedding table.

use std::fmt;

use crate::error::Result;
use crate::tensor::HostTensor;

use super::names::Component;

/// A change to some of a store's tensors, by diffusers name. Shared by every model built from
/// the store (and by the threads that build them), hence `Send + Sync`.
pub trait Overlay: Send + Sync + fmt::Debug {
    /// What to call this overlay in errors (`LoRA add_detail.safetensors`).
    fn describe(&self) -> String;

    /// Whether it changes or adds the tensor `name` (canonical diffusers name, from the
    /// component's root: `down_blocks.0.attentions.0.proj_in.weight`) of `component`. Asked for
    /// every tensor read, so it should be a lookup.
    fn touches(&self, component: Component, name: &str) -> bool;

    /// The tensor model code sees, given the one below (the base's or a lower overlay's, in
    /// the shape the model asked for; `None` when nothing below holds `name`). Called only for
    /// names it [`touches`](Self::touches).
    fn apply(
        &self,
        component: Component,
        name: &str,
        below: Option<HostTensor>,
    ) -> Result<HostTensor>;
}
