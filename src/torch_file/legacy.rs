//! torch's legacy serialisation (before PyTorch 1.6, or `torch.save(...,
//! _use_new_zipfile_serialization=False)`): pickles back to back, then the storages' bytes.
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c` (a pickled int);
//! 2. the format version, 1001;
//! 3. `sys_info`: `{"protocol_version", "little_endian", "type_sizes"}`;
//! 4. the saved object, storages as persistent ids `('storage', type, key, location, numel, None)`;
//! 5. the storage keys, in the order their data follows;
//! 6. per key: its element count (little-endian i64), then the elements.
//!
//! Every pickle goes through the same restricted reader as the zip format's `data.pkl`; the
//! storages become [`Entry`]s named as the zip format names them, so the rest of the reader
//! does not know which format it came from.

use super::pickle::{Pickle, PickleError, Value};
use super::zip::Entry;

/// The first pickle of every legacy file: protocol 2, `LONG1` of 10 bytes, the magic, `STOP`.
const MAGIC_PICKLE: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";
/// The only format version torch writes.
const VERSION: i64 = 1001;
/// The archive folder the storages' entries are put under (`<FOLDER>/data/<key>`).
pub const FOLDER: &str = "legacy";

/// Whether `bytes` start as a legacy torch file.
pub fn is_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC_PICKLE)
}

/// The saved object's pickle and its storages as entries of `bytes`.
pub fn read(bytes: &[u8]) -> Result<(Pickle, Vec<Entry>), PickleError> {
    let bad = |reason: String| PickleError::Invalid(reason);
    let mut at = MAGIC_PICKLE.len();
    let mut next = |what: &str| -> Result<Pickle, PickleError> {
        let (pickle, length) = Pickle::parse_prefix(&bytes[at..]).map_err(|e| match e {
            PickleError::Invalid(reason) => bad(format!("legacy {what}: {reason}")),
            forbidden => forbidden,
        })?;
        at += length;
        Ok(pickle)
    };
    let version = next("version")?;
    if version.value(version.root()) != &Value::Int(VERSION) {
        return Err(bad(format!(
            "legacy format version {:?}, not {VERSION}",
            version.value(version.root())
        )));
    }
    let info = next("sys_info")?;
    let little_endian = info.dict_get(info.root(), "little_endian");
    if little_endian.is_some_and(|id| info.value(id) != &Value::Bool(true)) {
        return Err(bad("tensors stored big-endian".into()));
    }
    let object = next("object")?;
    let keys = next("storage keys")?;
    let Value::List(key_ids) = keys.value(keys.root()) else {
        return Err(bad("the storage keys are not a list".into()));
    };
    let mut entries = Vec::with_capacity(key_ids.len());
    for &id in key_ids {
        let key = keys
            .str(id)
            .ok_or_else(|| bad("a storage key that is not a string".into()))?;
        let storage = object
            .storages()
            .find(|s| s.key == key)
            .ok_or_else(|| bad(format!("storage {key} has data but no tensor uses it")))?;
        let header = bytes
            .get(at..at + 8)
            .ok_or_else(|| bad(format!("storage {key}: the file ends before its length")))?;
        let numel = u64::from_le_bytes(header.try_into().unwrap_or_default());
        if numel != storage.numel {
            return Err(bad(format!(
                "storage {key} holds {numel} elements, its tensors say {}",
                storage.numel
            )));
        }
        let start = at + 8;
        let end = numel
            .checked_mul(storage.dtype.size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| bad(format!("storage {key}: the file ends inside its data")))?;
        entries.push(Entry {
            name: format!("{FOLDER}/data/{key}"),
            data: start..end,
        });
        at = end;
    }
    Ok((object, entries))
}
