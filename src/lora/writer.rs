//! Writing LoRA files: what [`extract`](super::extract) and [`resize`](super::resize) produce,
//! as kohya's scripts save it (a safetensors file of `lora_down` / `lora_up` / `alpha` tensors
//! and `ss_*` metadata).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::{bf16, f16};
use ndarray::{Array2, IxDyn};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sd_core::{Error, HostTensor, Result};

/// The element type a LoRA file is saved in (kohya's `--save_precision`; default f32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SavePrecision {
    #[default]
    F32,
    F16,
    Bf16,
}

/// A LoRA file's tensors and metadata, ready to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraFile {
    /// Tensors by key (`<module>.lora_down.weight`, …), all f32 until written.
    pub tensors: BTreeMap<String, HostTensor>,
    /// The safetensors `__metadata__` entries.
    pub metadata: BTreeMap<String, String>,
}

impl LoraFile {
    /// Put one module's factors in: `up` `[out, r]` and `down` `[r, in · kh · kw]`, shaped as
    /// kohya stores them (`[out, r, 1, 1]` and `[r, in, kh, kw]` for a conv with `kernel`
    /// `[kh, kw]`), under `<module><down_suffix>` / `<module><up_suffix>`, and `alpha`.
    pub fn insert_low_rank(
        &mut self,
        module: &str,
        (down_suffix, up_suffix): (&str, &str),
        (up, down): (Array2<f64>, Array2<f64>),
        kernel: &[usize],
        alpha: f32,
    ) -> Result<()> {
        let rank = down.nrows();
        let (mut up_shape, mut down_shape) = (vec![up.nrows(), rank], vec![rank, down.ncols()]);
        if !kernel.is_empty() {
            let kernel_size: usize = kernel.iter().product();
            up_shape.extend([1, 1]);
            down_shape = [rank, down.ncols() / kernel_size.max(1)]
                .into_iter()
                .chain(kernel.iter().copied())
                .collect();
        }
        let reshape = |m: Array2<f64>, shape: Vec<usize>| -> Result<HostTensor> {
            // `iter` reads in logical order: the SVD's factors may be column-major views.
            HostTensor::from_shape_vec(IxDyn(&shape), m.iter().map(|&x| x as f32).collect())
                .map_err(|e| {
                    Error::invalid_argument(format!("LoRA module {module}"), e.to_string())
                })
        };
        self.tensors
            .insert(format!("{module}{up_suffix}"), reshape(up, up_shape)?);
        self.tensors
            .insert(format!("{module}{down_suffix}"), reshape(down, down_shape)?);
        self.tensors.insert(
            format!("{module}.alpha"),
            HostTensor::from_elem(IxDyn(&[]), alpha),
        );
        Ok(())
    }

    /// Write the file at `path` in `precision` (the file is replaced if it exists).
    pub fn write(&self, path: &Path, precision: SavePrecision) -> Result<()> {
        let encoded: Vec<(&String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(key, tensor)| (key, tensor.shape().to_vec(), encode(tensor, precision)))
            .collect();
        let dtype = match precision {
            SavePrecision::F32 => Dtype::F32,
            SavePrecision::F16 => Dtype::F16,
            SavePrecision::Bf16 => Dtype::BF16,
        };
        let io_error = |reason: String| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(reason),
        };
        let views = encoded
            .iter()
            .map(|(key, shape, bytes)| {
                TensorView::new(dtype, shape.clone(), bytes)
                    .map(|view| (key.as_str(), view))
                    .map_err(|e| io_error(format!("tensor {key}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::serialize_to_file(views, Some(metadata), path)
            .map_err(|e| io_error(e.to_string()))
    }
}

/// The tensor's little-endian bytes in `precision`.
fn encode(tensor: &HostTensor, precision: SavePrecision) -> Vec<u8> {
    let values = tensor.iter().copied();
    match precision {
        SavePrecision::F32 => values.flat_map(f32::to_le_bytes).collect(),
        SavePrecision::F16 => values
            .flat_map(|x| f16::from_f32(x).to_le_bytes())
            .collect(),
        SavePrecision::Bf16 => values
            .flat_map(|x| bf16::from_f32(x).to_le_bytes())
            .collect(),
    }
}
