//! PyTorch `.pt` / `.bin` files (`torch.save`'s zip format, and the legacy pre-1.6 format) read
//! without Python and without running anything: the zip directory ([`zip`]) or the legacy
//! layout ([`legacy`]), the pickle of the saved object through a restricted reader ([`pickle`]),
//! and tensor data from the archive's `data/<key>` entries.
//!
//! ```no_run
//! use stable_diffusion::torch_file::TorchFile;
//! # fn main() -> stable_diffusion::Result<()> {
//! let file = TorchFile::open("embedding.pt")?;
//! let pickle = file.pickle();
//! if let Some(id) = pickle.dict_get(pickle.root(), "string_to_param") {
//!     println!("{:?}", pickle.value(id));
//! }
//! # Ok(()) }
//! ```

pub mod legacy;
pub mod pickle;
pub mod zip;

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use sd_core::{Error, HostTensor, Result};

use self::pickle::{Pickle, PickleError, StorageDtype, TensorRef};

/// The largest file read (whole, into memory): embeddings are kilobytes, and a larger `.pt`
/// is not something this reader is for.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// An opened `torch.save` file: its bytes, its entries and its parsed pickle.
#[derive(Debug)]
pub struct TorchFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// The archive's folder: torch names entries `<folder>/data.pkl`, `<folder>/data/0`, ….
    folder: String,
    entries: Vec<zip::Entry>,
    pickle: Pickle,
}

impl TorchFile {
    /// Read and parse `path`. A pickle naming a global outside torch's tensor vocabulary is
    /// [`Error::ForbiddenPickleGlobal`]; anything malformed is [`Error::InvalidTorchFile`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let len = std::fs::metadata(&path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(invalid(
                &path,
                format!("{len} bytes, more than the {MAX_FILE_BYTES} this reader takes"),
            ));
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        Self::from_bytes(path, bytes)
    }

    /// Parse a file already in memory (`path` names it in errors).
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        let pickle_error = |e| match e {
            PickleError::ForbiddenGlobal(global) => Error::ForbiddenPickleGlobal {
                path: path.clone(),
                global,
            },
            PickleError::Invalid(reason) => invalid(&path, format!("data.pkl: {reason}")),
        };
        if legacy::is_legacy(&bytes) {
            let (pickle, entries) = legacy::read(&bytes).map_err(pickle_error)?;
            return Ok(TorchFile {
                path,
                bytes,
                folder: legacy::FOLDER.to_string(),
                entries,
                pickle,
            });
        }
        if !bytes.starts_with(b"PK\x03\x04") {
            let reason = if bytes.starts_with(b"\x80") {
                "a bare pickle, not a torch.save file (zip, or the legacy format's magic number)"
            } else {
                "not a zip archive (torch.save writes one)"
            };
            return Err(invalid(&path, reason));
        }
        let entries = zip::entries(&bytes).map_err(|reason| invalid(&path, reason))?;
        let pickle_entry = entries
            .iter()
            .find(|e| e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1)
            .ok_or_else(|| invalid(&path, "no <folder>/data.pkl entry"))?;
        let folder = pickle_entry.name.trim_end_matches("/data.pkl").to_string();
        if let Some(order) = entries
            .iter()
            .find(|e| e.name == format!("{folder}/byteorder"))
            && &bytes[order.data.clone()] != b"little"
        {
            return Err(invalid(&path, "tensors stored big-endian"));
        }
        let pickle = Pickle::parse(&bytes[pickle_entry.data.clone()]).map_err(pickle_error)?;
        Ok(TorchFile {
            path,
            bytes,
            folder,
            entries,
            pickle,
        })
    }

    /// The path the file was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved object.
    pub fn pickle(&self) -> &Pickle {
        &self.pickle
    }

    /// The data of `tensor` as f32 (from f32, f16, bf16 or f64 storage), its view checked
    /// against the storage and the storage against its archive entry. `name` is how errors call it.
    pub fn tensor(&self, tensor: &TensorRef, name: &str) -> Result<HostTensor> {
        let bad = |reason: String| invalid(&self.path, format!("tensor {name}: {reason}"));
        let storage = &tensor.storage;
        let key = format!("{}/data/{}", self.folder, storage.key);
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == key)
            .ok_or_else(|| bad(format!("no entry {key} for its storage")))?;
        let item = storage.dtype.size() as u64;
        let data = &self.bytes[entry.data.clone()];
        if storage.numel.checked_mul(item) != Some(data.len() as u64) {
            return Err(bad(format!(
                "storage {key} holds {} bytes, not {} elements of {item} bytes",
                data.len(),
                storage.numel
            )));
        }
        let elements = tensor
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad("its size overflows".into()))?;
        // A view never has more elements than its storage here (stride-0 broadcasts aside, which
        // tensor files do not hold): this bounds the memory a file can make us allocate.
        if elements > storage.numel {
            return Err(bad(format!(
                "{elements} elements from a storage of {}",
                storage.numel
            )));
        }
        // The furthest element the view reaches must lie in the storage.
        let last = tensor
            .shape
            .iter()
            .zip(&tensor.stride)
            .try_fold(tensor.offset, |end, (&d, &s)| {
                end.checked_add(d.saturating_sub(1).checked_mul(s)?)
            });
        if elements > 0 && last.is_none_or(|last| last >= storage.numel) {
            return Err(bad(format!(
                "its view (offset {}, size {:?}, stride {:?}) runs past its storage of {}",
                tensor.offset, tensor.shape, tensor.stride, storage.numel
            )));
        }
        let mut values = Vec::with_capacity(elements as usize);
        let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
        let mut index = vec![0u64; shape.len()];
        for _ in 0..elements {
            let at = tensor.offset
                + index
                    .iter()
                    .zip(&tensor.stride)
                    .map(|(i, s)| i * s)
                    .sum::<u64>();
            values.push(element(data, storage.dtype, at as usize));
            // Row-major: the last axis moves fastest.
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < tensor.shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        HostTensor::from_shape_vec(shape, values).map_err(|e| bad(e.to_string()))
    }
}

/// Element `at` of little-endian storage bytes (in bounds: checked by the caller).
fn element(data: &[u8], dtype: StorageDtype, at: usize) -> f32 {
    let bytes = &data[at * dtype.size()..(at + 1) * dtype.size()];
    match dtype {
        StorageDtype::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        StorageDtype::F16 => f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
        StorageDtype::BF16 => bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
        StorageDtype::F64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            f64::from_le_bytes(b) as f32
        }
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidTorchFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
