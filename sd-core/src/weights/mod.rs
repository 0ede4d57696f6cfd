//! `WeightStore`: mmap'd safetensors with diffusers names, LDM key mapping and variant detection.
//!
//! Model code always asks for diffusers names, per component, whatever the checkpoint's layout:
//!
//! ```no_run
//! use sd_core::weights::WeightStore;
//! # fn demo() -> sd_core::Result<()> {
//! let store = WeightStore::open("v1-5-pruned-emaonly.safetensors")?; // or a diffusers folder
//! let unet = store.unet()?;
//! let attn = unet.at("down_blocks.0.attentions.0.transformer_blocks.0.attn1");
//! let to_q = attn.get_shaped("to_q.weight", &[320, 320])?; // f32, whatever the file stores
//! # Ok(()) }
//! ```
//!
//! - [`file`](mod@file): one safetensors file, validated in full at open, read on demand.
//! - [`names`]: the components and the canonical spelling of names.
//! - [`diffusers`]: where a diffusers folder keeps each component's files.
//! - [`ldm`]: LDM single-file names → diffusers names, generated from the architecture.
//! - [`variant`]: standard vs inpainting, and refusing SD 2.x / SDXL.
//! - [`store`]: [`WeightStore`] and the scoped [`Weights`] view model code uses.
//! - [`overlay`]: [`Overlay`], a change to named tensors (LoRA deltas) merged when they are read.
//! - [`synthetic`]: seeded random weights of any shape asked, for benchmarks ([`WeightStore::synthetic`]).

pub mod diffusers;
pub mod file;
pub mod ldm;
pub mod names;
pub mod overlay;
pub mod store;
pub mod synthetic;
pub mod variant;

pub use file::{SafetensorsFile, TensorInfo};
pub use ldm::{LdmLayout, UnetLayout, VaeLayout};
pub use names::Component;
pub use overlay::Overlay;
pub use safetensors::Dtype as StoredDtype;
pub use store::{UnetWeights, WeightStore, Weights};
pub use variant::Variant;
