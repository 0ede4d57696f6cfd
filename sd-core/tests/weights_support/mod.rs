//! Helpers shared by the weights tests: scratch folders and hand-built safetensors files.
//!
//! Files are written byte by byte here (not with the `safetensors` crate) so that tests can
//! also build the malformed ones.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A folder under the system temp dir, removed when dropped.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new(test: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sd-core-weights-{test}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Write `bytes` to `name` (which may contain `/`), creating folders.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One tensor of a hand-built file: raw little-endian bytes plus what the header says.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// An F32 tensor.
pub fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> RawTensor {
    RawTensor {
        name: name.to_string(),
        dtype: "F32".to_string(),
        shape: shape.to_vec(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// An F32 tensor filled with `0, 1, 2, …` plus `offset`, so each tensor is recognisable.
pub fn counting(name: &str, shape: &[usize], offset: f32) -> RawTensor {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32 + offset).collect();
    f32_tensor(name, shape, &values)
}

/// A tensor of any dtype from its raw bytes.
pub fn raw_tensor(name: &str, dtype: &str, shape: &[usize], bytes: Vec<u8>) -> RawTensor {
    RawTensor {
        name: name.to_string(),
        dtype: dtype.to_string(),
        shape: shape.to_vec(),
        bytes,
    }
}

/// The JSON header of `tensors` laid out back to back in the given order.
pub fn header_json(tensors: &[RawTensor]) -> String {
    let mut map = serde_json::Map::new();
    let mut offset = 0;
    for t in tensors {
        let end = offset + t.bytes.len();
        map.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    serde_json::Value::Object(map).to_string()
}

/// A file from a header string and a data section, with the true header length.
pub fn file_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A valid safetensors file holding `tensors`.
pub fn safetensors_bytes(tensors: &[RawTensor]) -> Vec<u8> {
    let data: Vec<u8> = tensors.iter().flat_map(|t| t.bytes.clone()).collect();
    file_bytes(&header_json(tensors), &data)
}
