//! The SHA-256 of each checkpoint the server has loaded, for `GET sd-models` (`sha256`, and
//! `hash`, its first 10 digits) and `GET options` (`sd_checkpoint_hash`).
//!
//! As A1111 does, a checkpoint is hashed when it is first loaded, not when it is listed (a
//! models folder of multi-GB files would take minutes to hash); entries not loaded yet answer
//! `null`. The hash is kept per checkpoint with the size and modification time of its weight
//! files, so switching back to a model does not read it again, and a file replaced in place is
//! hashed again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use sd_core::Result;

use crate::model_hash::sha256_hex;

/// What a hash was computed from: each weight file's size and modification time.
type FileStamps = Vec<(PathBuf, u64, Option<SystemTime>)>;

#[derive(Debug, Default)]
pub struct ModelHashes {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Checkpoint title → the stamps of its files and their SHA-256.
    by_title: HashMap<String, (FileStamps, String)>,
    /// The title of the model in memory.
    loaded: Option<String>,
}

impl ModelHashes {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The SHA-256 of checkpoint `title` made of `files` (hashed unless they are unchanged
    /// since the last time), which is now the loaded model.
    pub fn loaded_model(&self, title: &str, files: &[PathBuf]) -> Result<String> {
        let stamps = stamps(files);
        let known = self
            .state()
            .by_title
            .get(title)
            .filter(|(seen, _)| *seen == stamps)
            .map(|(_, sha256)| sha256.clone());
        // Hashed outside the lock: `GET sd-models` goes on answering meanwhile.
        let sha256 = match known {
            Some(sha256) => sha256,
            None => sha256_hex(files)?,
        };
        let mut state = self.state();
        state
            .by_title
            .insert(title.to_string(), (stamps, sha256.clone()));
        state.loaded = Some(title.to_string());
        Ok(sha256)
    }

    /// The SHA-256 of checkpoint `title`, if it has been loaded.
    pub fn sha256(&self, title: &str) -> Option<String> {
        let state = self.state();
        state.by_title.get(title).map(|(_, sha256)| sha256.clone())
    }

    /// The loaded model's SHA-256.
    pub fn loaded_sha256(&self) -> Option<String> {
        let state = self.state();
        let title = state.loaded.as_ref()?;
        state.by_title.get(title).map(|(_, sha256)| sha256.clone())
    }
}

fn stamps(files: &[PathBuf]) -> FileStamps {
    files
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (path.clone(), size, modified)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_hash_is_kept_until_its_files_change() {
        let dir = std::env::temp_dir().join(format!("sd-model-hashes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.safetensors");
        std::fs::write(&file, b"abc").unwrap();
        let hashes = ModelHashes::default();
        assert_eq!(hashes.sha256("m.safetensors"), None);
        let first = hashes
            .loaded_model("m.safetensors", std::slice::from_ref(&file))
            .unwrap();
        // SHA-256("abc") (FIPS 180-2).
        assert!(first.starts_with("ba7816bf8f01cfea"));
        assert_eq!(hashes.loaded_sha256(), Some(first.clone()));
        assert_eq!(hashes.sha256("m.safetensors"), Some(first.clone()));
        // Another size: hashed again.
        std::fs::write(&file, b"abcd").unwrap();
        let second = hashes
            .loaded_model("m.safetensors", std::slice::from_ref(&file))
            .unwrap();
        assert_ne!(first, second);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
