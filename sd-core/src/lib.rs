//! sd-core: the foundation of sd-rs.
//!
//! - [`Backend`]: the tensor op set SD 1.5 needs; model code is written once over it.
//! - [`cpu::CpuBackend`]: the ndarray reference backend (f32, multi-threaded).
//! - [`weights::WeightStore`]: safetensors checkpoints (diffusers folders and LDM single files).
//! - [`TorchGenerator`]: `torch.randn` with a CPU generator, bit for bit.
//! - [`components`]: the traits a pipeline is assembled from.
//! - [`nn`]: the layer library every model is built from; [`config_file`]: JSON config reading.
//! - [`pipeline`]: the generic [`Pipeline`] over those traits (txt2img, img2img, inpainting).

pub mod backend;
pub mod components;
pub mod config_file;
pub mod cpu;
pub mod error;
pub mod latent_dist;
pub mod nn;
pub mod on_demand;
pub mod pipeline;
pub mod profile;
pub mod rng;
pub mod shapes;
pub mod tensor;
pub mod weights;

pub use backend::{Backend, BinaryOp, Conv2dParams, TensorInfo, UnaryOp, WeightRole};
pub use components::{
    Denoiser, ErrorShare, Guidance, LatentCodec, LatentDist, PartWay, PromptMode, ScheduleState,
    Scheduler, TextEncoder, TextOptions,
};
pub use error::{Error, Result};
pub use pipeline::{Generation, GenerationRequest, Pipeline};
pub use rng::{NormalMode, NormalSource, PhiloxGenerator, RngSource, TorchGenerator};
pub use tensor::{DType, HostTensor};
