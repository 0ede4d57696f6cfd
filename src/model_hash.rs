//! AUTOMATIC1111's short hashes: the first 10 hex digits of the SHA-256 of a checkpoint file
//! ("AutoV2", its `Model hash`) and the first 12 of a LoRA or embedding file's (its `Lora
//! hashes` and `TI hashes`), what image sites and A1111 match files by.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sd_core::{Error, Result};
use sha2::{Digest, Sha256};

/// Hex digits A1111 keeps of a checkpoint's hash.
const SHORT_HASH_DIGITS: usize = 10;

/// Hex digits A1111 keeps of a LoRA or embedding file's hash (`NetworkOnDisk.shorthash`,
/// `Embedding.shorthash`).
const FILE_HASH_DIGITS: usize = 12;

/// The short hash of the concatenated `files` (for a single-file checkpoint, exactly A1111's).
pub fn short_hash<P: AsRef<Path>>(files: &[P]) -> Result<String> {
    Ok(short_of_sha256(&sha256_hex(files)?).to_string())
}

/// The short hash of a checkpoint whose full SHA-256 ([`sha256_hex`]) is known.
pub fn short_of_sha256(sha256: &str) -> &str {
    sha256.get(..SHORT_HASH_DIGITS).unwrap_or(sha256)
}

/// A1111's short hash of a LoRA file.
pub fn lora_hash(file: &Path) -> Result<String> {
    Ok(sha256_hex(&[file])?[..FILE_HASH_DIGITS].to_string())
}

/// A1111's short hash of a textual-inversion embedding file (the same rule as a LoRA's).
pub fn embedding_hash(file: &Path) -> Result<String> {
    lora_hash(file)
}

/// SHA-256 of the concatenated `files`, in lower-case hex (A1111's `sha256` of a checkpoint).
pub fn sha256_hex<P: AsRef<Path>>(files: &[P]) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in files {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        loop {
            let read = file.read(&mut buffer).map_err(io)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    #[test]
    fn hash_of_known_bytes() {
        let dir = std::env::temp_dir().join(format!("sd-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abc.bin");
        std::fs::write(&path, b"abc").unwrap();
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad (FIPS 180-2).
        assert_eq!(super::short_hash(&[&path]).unwrap(), "ba7816bf8f");
        assert_eq!(super::lora_hash(&path).unwrap(), "ba7816bf8f01");
        let full = super::sha256_hex(&[&path]).unwrap();
        assert_eq!(full.len(), 64);
        assert_eq!(super::short_of_sha256(&full), "ba7816bf8f");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
