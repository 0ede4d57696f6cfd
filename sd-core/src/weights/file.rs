//! One memory-mapped safetensors file: its header checked in full at open, tensors read on demand.
//!
//! Layout of the format: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`), then the
//! data section, which the offsets (relative to its start) must cover exactly, without holes or
//! overlaps. We check all of it before handing out a single byte, so that every later read is a
//! plain in-bounds slice of the map. The rules are those of the `safetensors` crate (the tests
//! hold us to accepting exactly the files it accepts); we check them ourselves because its errors
//! name neither the tensor nor the numbers involved.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Bytes of the little-endian header length that opens every file.
const HEADER_LENGTH_BYTES: usize = 8;

/// Largest JSON header we parse; the `safetensors` crate refuses anything larger too, and it
/// keeps a corrupt length from making us read gigabytes as JSON.
const MAX_HEADER_BYTES: usize = 100_000_000;

/// The reserved header key for free-form string metadata.
const METADATA_KEY: &str = "__metadata__";

/// Where one tensor lives in a file and what it holds, known without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The element type as stored.
    pub dtype: Dtype,
    /// The shape as stored.
    pub shape: Vec<usize>,
    /// Absolute byte range of the data in the file.
    pub(crate) bytes: std::ops::Range<usize>,
}

/// A validated, memory-mapped safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    tensors: HashMap<String, TensorInfo>,
    metadata: HashMap<String, String>,
}

/// One header entry as JSON spells it; unknown fields are ignored, as the reference crate does.
#[derive(Deserialize)]
struct HeaderEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl SafetensorsFile {
    /// Map `path` and check its header: length, JSON, dtypes, and that the offsets tile the
    /// data section exactly with each tensor's size equal to dtype × shape.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the map is read-only and private to this struct. Like every mmap-based
        // loader (safetensors, candle) we rely on nobody truncating or rewriting the file while
        // it is open; what we can check — every offset against the mapped length — we check below.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let (tensors, metadata) =
            parse_header(&map).map_err(|reason| Error::InvalidSafetensors {
                path: path.clone(),
                reason,
            })?;
        Ok(Self {
            path,
            map,
            tensors,
            metadata,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of all tensors, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Dtype, shape and location of `name`, if the file has it.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The `__metadata__` string map of the header (empty when absent).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Read tensor `key` as f32, converting from F16 or BF16.
    pub fn get(&self, key: &str) -> Result<HostTensor> {
        self.read_f32(key, key)
    }

    /// Read `key` as f32, converting from F16 or BF16. `shown_name` is how errors call it
    /// (the caller may know it by another name than the file's key).
    pub(crate) fn read_f32(&self, key: &str, shown_name: &str) -> Result<HostTensor> {
        let info = self.tensors.get(key).ok_or_else(|| Error::MissingTensor {
            name: shown_name.to_string(),
            files: vec![self.path.clone()],
        })?;
        // In bounds: `parse_header` checked every range against the mapped length.
        let bytes = &self.map[info.bytes.clone()];
        let values = match info.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => decode(bytes, info.dtype),
            other => {
                return Err(Error::UnsupportedDtype {
                    name: shown_name.to_string(),
                    path: self.path.clone(),
                    dtype: other.to_string(),
                });
            }
        };
        self.unmap_pages(info.bytes.clone());
        HostTensor::from_shape_vec(info.shape.clone(), values).map_err(|e| {
            Error::InvalidSafetensors {
                path: self.path.clone(),
                reason: format!("tensor {shown_name}: {e}"),
            }
        })
    }
}

impl SafetensorsFile {
    /// Drop this process's mapping of the whole pages inside `range` once their tensor has been
    /// converted: mapped file pages count in the resident size, so without this a converted
    /// checkpoint would be counted twice (its bytes and the converted copy). The pages stay in
    /// the OS page cache; reading them again costs a page fault, not a disk read.
    fn unmap_pages(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        {
            // 4 KiB is the smallest page size; with larger pages madvise rejects the unaligned
            // range and nothing happens (the result is only an optimisation).
            const PAGE: usize = 4096;
            let (start, end) = (range.start.next_multiple_of(PAGE), range.end / PAGE * PAGE);
            if end > start {
                // SAFETY: the range lies inside the read-only map (checked by parse_header) and
                // no reference into it outlives `read_f32`'s conversion, which has finished;
                // DontNeed on a file mapping only makes the next access re-read the page from
                // the file, whose contents the map already assumes do not change.
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}

/// Elements converted per parallel task: big enough to amortise scheduling, small enough for
/// the 16-bit staging buffer to live on the stack.
const DECODE_CHUNK: usize = 8192;

/// Decode little-endian elements into f32, in parallel chunks. The data section starts wherever
/// the header ends, so elements are not aligned in memory: 16-bit values are first gathered into
/// an aligned buffer, then widened with `half`'s vectorised slice conversion.
fn decode(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    let width = dtype.bitsize() / 8;
    let mut out = vec![0f32; bytes.len() / width];
    out.par_chunks_mut(DECODE_CHUNK)
        .zip(bytes.par_chunks(DECODE_CHUNK * width))
        .for_each(|(dst, src)| match dtype {
            Dtype::F16 => widen::<f16>(src, dst),
            Dtype::BF16 => widen::<bf16>(src, dst),
            _ => {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        });
    out
}

/// A 16-bit float type `half` can widen a slice of.
trait Half: Copy + Default {
    fn from_le(bytes: [u8; 2]) -> Self;
    fn widen(src: &[Self], dst: &mut [f32]);
}

impl Half for f16 {
    fn from_le(bytes: [u8; 2]) -> Self {
        f16::from_le_bytes(bytes)
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

impl Half for bf16 {
    fn from_le(bytes: [u8; 2]) -> Self {
        bf16::from_le_bytes(bytes)
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

fn widen<H: Half>(src: &[u8], dst: &mut [f32]) {
    let mut staged = [H::default(); DECODE_CHUNK];
    let staged = &mut staged[..dst.len()];
    for (h, b) in staged.iter_mut().zip(src.chunks_exact(2)) {
        *h = H::from_le([b[0], b[1]]);
    }
    H::widen(staged, dst);
}

type ParsedHeader = (HashMap<String, TensorInfo>, HashMap<String, String>);

/// Check the whole file layout; `Err` is the human-readable reason.
fn parse_header(file: &[u8]) -> std::result::Result<ParsedHeader, String> {
    let Some(length_bytes) = file.get(..HEADER_LENGTH_BYTES) else {
        return Err(format!(
            "file is {} bytes, too short for the {HEADER_LENGTH_BYTES}-byte header length",
            file.len()
        ));
    };
    let mut le = [0u8; HEADER_LENGTH_BYTES];
    le.copy_from_slice(length_bytes);
    let declared = u64::from_le_bytes(le);
    let room = file.len() - HEADER_LENGTH_BYTES;
    let header_len = usize::try_from(declared)
        .ok()
        .filter(|&n| n <= MAX_HEADER_BYTES)
        .ok_or_else(|| {
            format!("header length {declared} exceeds the {MAX_HEADER_BYTES}-byte limit")
        })?;
    if header_len > room {
        return Err(format!(
            "header length {header_len} runs past the end of the file ({room} bytes follow it; truncated?)"
        ));
    }
    let data_start = HEADER_LENGTH_BYTES + header_len;
    let header = std::str::from_utf8(&file[HEADER_LENGTH_BYTES..data_start])
        .map_err(|e| format!("header is not UTF-8: {e}"))?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(header).map_err(|e| format!("header is not a JSON object: {e}"))?;

    let mut metadata = HashMap::new();
    let mut entries = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == METADATA_KEY {
            let map: Option<HashMap<String, String>> = serde_json::from_value(value)
                .map_err(|e| format!("{METADATA_KEY} is not a map of strings: {e}"))?;
            metadata = map.unwrap_or_default();
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| format!("tensor {name}: bad header entry: {e}"))?;
        check_size(&name, &entry)?;
        entries.push((name, entry));
    }

    let data_len = file.len() - data_start;
    let tensors = check_tiling(entries, data_start, data_len)?;
    Ok((tensors, metadata))
}

/// The byte span of a tensor must be exactly what its dtype and shape need.
fn check_size(name: &str, entry: &HeaderEntry) -> std::result::Result<(), String> {
    let (begin, end) = entry.data_offsets;
    if end < begin {
        return Err(format!(
            "tensor {name}: data_offsets [{begin}, {end}] end before they begin"
        ));
    }
    let overflow = || {
        format!(
            "tensor {name}: {} {:?} is too large to address",
            entry.dtype, entry.shape
        )
    };
    let elements = entry
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let bits = elements
        .checked_mul(entry.dtype.bitsize())
        .ok_or_else(overflow)?;
    if bits % 8 != 0 {
        return Err(format!(
            "tensor {name}: {} {:?} does not fill whole bytes",
            entry.dtype, entry.shape
        ));
    }
    let needed = bits / 8;
    if end - begin != needed {
        return Err(format!(
            "tensor {name}: data_offsets [{begin}, {end}] span {} bytes but {} {:?} needs {needed}",
            end - begin,
            entry.dtype,
            entry.shape
        ));
    }
    Ok(())
}

/// Sorted by offset, the tensors must follow each other without gap or overlap from byte 0 to
/// the end of the file: anything else means the offsets lie or the file is truncated.
fn check_tiling(
    mut entries: Vec<(String, HeaderEntry)>,
    data_start: usize,
    data_len: usize,
) -> std::result::Result<HashMap<String, TensorInfo>, String> {
    entries.sort_by_key(|(_, e)| e.data_offsets);
    let mut covered = 0usize;
    let mut previous: Option<&str> = None;
    for (name, entry) in &entries {
        let (begin, end) = entry.data_offsets;
        if begin != covered {
            return Err(match previous {
                Some(prev) if begin < covered => format!(
                    "tensor {name}: data_offsets [{begin}, {end}] overlap tensor {prev}, which ends at {covered}"
                ),
                Some(prev) => format!(
                    "tensor {name}: data_offsets [{begin}, {end}] leave a gap after tensor {prev}, which ends at {covered}"
                ),
                None => format!(
                    "tensor {name}: data_offsets [{begin}, {end}] leave a gap at the start of the data"
                ),
            });
        }
        if end > data_len {
            return Err(format!(
                "tensor {name}: data_offsets [{begin}, {end}] run past the end of the data ({data_len} bytes; truncated?)"
            ));
        }
        covered = end;
        previous = Some(name);
    }
    if covered != data_len {
        return Err(format!(
            "the tensors cover {covered} bytes of data but the file has {data_len} after the header"
        ));
    }
    Ok(entries
        .into_iter()
        .map(|(name, e)| {
            let (begin, end) = e.data_offsets;
            let info = TensorInfo {
                dtype: e.dtype,
                shape: e.shape,
                bytes: data_start + begin..data_start + end,
            };
            (name, info)
        })
        .collect())
}
