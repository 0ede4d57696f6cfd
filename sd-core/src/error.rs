//! The one error type of the workspace core.
//!
//! Every variant names what went wrong and where: the file, the tensor, the argument or the op,
//! with the expected and found values where there are two. Nothing a user controls panics.

use std::path::PathBuf;

use crate::tensor::DType;

/// Result alias used across sd-core and the model crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sd-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed at the OS level.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A safetensors file is truncated, its header is not JSON, or its offsets lie.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    InvalidSafetensors { path: PathBuf, reason: String },

    /// Model code asked for a tensor that no loaded file has.
    #[error("tensor {name} not found in {}", files_list(files))]
    MissingTensor { name: String, files: Vec<PathBuf> },

    /// A tensor exists but has the wrong shape for the model's config.
    #[error("tensor {name} in {}: expected {expected:?}, found {found:?}", path.display())]
    TensorShape {
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor is stored in a dtype we cannot convert (e.g. I64, F8).
    #[error("tensor {name} in {}: unsupported dtype {dtype}, expected F32, F16 or BF16", path.display())]
    UnsupportedDtype {
        name: String,
        path: PathBuf,
        dtype: String,
    },

    /// The checkpoint is not an SD 1.x model (SD 2.x, SDXL, something else).
    #[error("unsupported model {}: {reason}", path.display())]
    UnsupportedModel { path: PathBuf, reason: String },

    /// A config.json is missing a field or has an inconsistent value.
    #[error("{}: field `{field}`: {reason}", path.display())]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },

    /// A tokenizer's files (vocab.json, merges.txt, tokenizer.json) are unreadable or
    /// inconsistent: not JSON, a malformed merge line, a merge of tokens the vocabulary lacks.
    #[error("{}: not a valid tokenizer file: {reason}", path.display())]
    InvalidTokenizer { path: PathBuf, reason: String },

    /// A user-supplied argument is out of range or malformed.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument { name: String, reason: String },

    /// A scheduler (sampler) name that no scheduler answers to.
    #[error("unknown scheduler `{name}`; known names: {}", known.join(", "))]
    UnknownScheduler { name: String, known: Vec<String> },

    /// A backend op received tensors whose shapes don't fit together.
    #[error("{op}: {reason}")]
    Shape { op: &'static str, reason: String },

    /// A backend op received a tensor of a dtype it does not handle.
    #[error("{op}: unsupported dtype {dtype:?}")]
    OpDtype { op: &'static str, dtype: DType },

    /// A generation was stopped by its progress callback.
    #[error("cancelled after step {step} of {total}")]
    Cancelled { step: usize, total: usize },

    /// The latents (or the text conditioning, or the decoded image) stopped being finite numbers:
    /// writing them out would give an all-black or noise image. `stage` names where it was
    /// caught, `step` the denoising step (0: before the first).
    #[error(
        "the {stage} became NaN or infinite at step {step} of {total}: the checkpoint may hold \
         NaN/inf weights, or a prompt weight or config value is too extreme; stopped rather than \
         write a black image"
    )]
    NonFinite {
        stage: &'static str,
        step: usize,
        total: usize,
    },

    /// A generation would clearly not fit in the memory the machine has free.
    #[error(
        "{what} needs about {} but only {} is available; use a smaller size or batch",
        gib(*needed),
        gib(*available)
    )]
    OutOfMemory {
        what: String,
        needed: u64,
        available: u64,
    },

    /// No usable CUDA device: the driver library (libcuda) is missing, it finds no device with
    /// the asked ordinal, or the device's context cannot be created. Callers may fall back to the
    /// CPU backend on this error.
    #[error("no CUDA device: {reason}")]
    NoCudaDevice { reason: String },

    /// The CUDA runtime compiler (libnvrtc) is missing or cannot compile the backend's kernels
    /// for the device.
    #[error("NVRTC unavailable: {reason}")]
    NoNvrtc { reason: String },

    /// A backend-specific failure (driver, compiler, allocation).
    #[error("{backend} backend: {reason}")]
    Backend {
        backend: &'static str,
        reason: String,
    },
}

impl Error {
    /// Shorthand for an op shape error.
    pub fn shape(op: &'static str, reason: impl Into<String>) -> Self {
        Error::Shape {
            op,
            reason: reason.into(),
        }
    }

    /// Shorthand for an invalid-argument error.
    pub fn invalid_argument(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Bytes as GiB with one decimal (`12.3 GiB`).
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn files_list(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}
