//! The part of the zip format `torch.save` writes: uncompressed ("stored") entries listed in a
//! central directory, optionally with ZIP64 records. Every offset and length is checked against
//! the file's bytes; a compressed entry is an error (torch never compresses).

use std::ops::Range;

/// One stored entry: its name and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub data: Range<usize>,
}

type Parse<T> = std::result::Result<T, String>;

const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
const ZIP64_END_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_END_OF_CENTRAL_DIRECTORY: u32 = 0x0606_4b50;
const CENTRAL_FILE_HEADER: u32 = 0x0201_4b50;
const LOCAL_FILE_HEADER: u32 = 0x0403_4b50;
/// The end record is 22 bytes plus a comment of at most 65535.
const MAX_END_SEARCH: usize = 22 + 0xffff;

/// Little-endian reads at checked offsets.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn slice(&self, at: usize, len: usize) -> Parse<&[u8]> {
        at.checked_add(len)
            .and_then(|end| self.0.get(at..end))
            .ok_or_else(|| format!("truncated: {len} bytes wanted at offset {at}"))
    }

    fn u16(&self, at: usize) -> Parse<usize> {
        let b = self.slice(at, 2)?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    }

    fn u32(&self, at: usize) -> Parse<u32> {
        let b = self.slice(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&self, at: usize) -> Parse<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.slice(at, 8)?);
        Ok(u64::from_le_bytes(b))
    }
}

fn to_usize(v: u64) -> Parse<usize> {
    usize::try_from(v).map_err(|_| format!("offset {v} does not fit this machine"))
}

/// The stored entries of the zip archive `bytes`.
pub fn entries(bytes: &[u8]) -> Parse<Vec<Entry>> {
    let file = Bytes(bytes);
    let search_from = bytes.len().saturating_sub(MAX_END_SEARCH);
    let end = (search_from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&at| file.u32(at).ok() == Some(END_OF_CENTRAL_DIRECTORY))
        .ok_or("no zip end-of-central-directory record (not a zip file, or truncated)")?;
    let mut count = file.u16(end + 10)? as u64;
    let mut directory = u64::from(file.u32(end + 16)?);
    // ZIP64: the 32-bit fields are saturated and a locator precedes the end record.
    if end >= 20 && file.u32(end - 20)? == ZIP64_END_LOCATOR {
        let record = to_usize(file.u64(end - 20 + 8)?)?;
        if file.u32(record)? != ZIP64_END_OF_CENTRAL_DIRECTORY {
            return Err("a ZIP64 locator pointing at no ZIP64 end record".into());
        }
        count = file.u64(record + 32)?;
        directory = file.u64(record + 48)?;
    }
    // Each central header takes 46 bytes at least: a count beyond that is a lie.
    if count > (bytes.len() / 46) as u64 {
        return Err(format!("the directory claims {count} entries"));
    }
    let mut at = to_usize(directory)?;
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if file.u32(at)? != CENTRAL_FILE_HEADER {
            return Err(format!("no central directory header at offset {at}"));
        }
        let method = file.u16(at + 10)?;
        let mut size = u64::from(file.u32(at + 24)?);
        let name_len = file.u16(at + 28)?;
        let extra_len = file.u16(at + 30)?;
        let comment_len = file.u16(at + 32)?;
        let mut local = u64::from(file.u32(at + 42)?);
        let name = String::from_utf8_lossy(file.slice(at + 46, name_len)?).into_owned();
        let extra = file.slice(at + 46 + name_len, extra_len)?;
        apply_zip64_extra(extra, file.u32(at + 20)?, &mut size, &mut local)?;
        if method != 0 {
            return Err(format!(
                "entry {name} is compressed (method {method}); torch.save stores entries uncompressed"
            ));
        }
        let local = to_usize(local)?;
        if file.u32(local)? != LOCAL_FILE_HEADER {
            return Err(format!("entry {name}: no local header at offset {local}"));
        }
        let start = local + 30 + file.u16(local + 26)? + file.u16(local + 28)?;
        let size = to_usize(size)?;
        file.slice(start, size)
            .map_err(|_| format!("entry {name}: its {size} bytes run past the end of the file"))?;
        out.push(Entry {
            name,
            data: start..start + size,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

/// ZIP64's extended-information field (id 1) holds the 64-bit values of the fields saturated at
/// 0xffffffff, in order: uncompressed size, compressed size, local header offset.
fn apply_zip64_extra(
    mut extra: &[u8],
    compressed: u32,
    size: &mut u64,
    local: &mut u64,
) -> Parse<()> {
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let body = extra.get(4..4 + len).ok_or("a truncated zip extra field")?;
        if id == 1 {
            let mut values = body
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
            if *size == 0xffff_ffff {
                *size = values.next().ok_or("a short ZIP64 field")?;
            }
            if compressed == 0xffff_ffff {
                values.next().ok_or("a short ZIP64 field")?;
            }
            if *local == 0xffff_ffff {
                *local = values.next().ok_or("a short ZIP64 field")?;
            }
        }
        extra = &extra[4 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// A zip of two stored entries, as Python's `zipfile` writes it (ZIP_STORED).
    fn two_entries() -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in [("a/data.pkl", &b"hello"[..]), ("a/data/0", &b"0123"[..])] {
            let local = out.len() as u32;
            out.extend_from_slice(&LOCAL_FILE_HEADER.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(&CENTRAL_FILE_HEADER.to_le_bytes());
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&local.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let directory = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&END_OF_CENTRAL_DIRECTORY.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 2, 0, 2, 0]);
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&directory.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn stored_entries_are_found_with_their_bytes() {
        let zip = two_entries();
        let entries = entries(&zip).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "a/data.pkl");
        assert_eq!(&zip[entries[0].data.clone()], b"hello");
        assert_eq!(&zip[entries[1].data.clone()], b"0123");
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let zip = two_entries();
        for end in 0..zip.len() {
            assert!(entries(&zip[..end]).is_err(), "{end} bytes read as a zip");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = entries(&bytes);
        }

        #[test]
        fn a_flipped_byte_never_panics(index in 0usize..200, byte in any::<u8>()) {
            let mut zip = two_entries();
            let index = index % zip.len();
            zip[index] = byte;
            let _ = entries(&zip);
        }
    }
}
