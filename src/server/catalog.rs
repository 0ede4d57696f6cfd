//! What a request may name: checkpoints (one `--model`, or the entries of `--models-dir`) and
//! LoRA files (`--lora-dir`). A name from a request is only ever compared with the entries a
//! folder listing found, never joined onto a path, so `..`, absolute paths and separators
//! cannot reach outside; an entry whose real path (symlinks resolved) leaves its folder is not
//! listed at all.

use std::path::{Path, PathBuf};

use sd_core::{Error, Result};
use serde_json::{Value, json};

/// One loadable checkpoint: a diffusers folder or an SD 1.x single `.safetensors` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// A1111's `title` and `model_name`: the file or folder name (with the extension of a file),
    /// stable whether or not the model has been hashed yet.
    pub title: String,
    /// The name without extension (`sd_model_name`, the infotext's `Model`).
    pub model_name: String,
    pub path: PathBuf,
}

impl Checkpoint {
    fn of(path: PathBuf) -> Option<Self> {
        let title = path.file_name()?.to_string_lossy().into_owned();
        let model_name = if path.is_dir() {
            title.clone()
        } else {
            path.file_stem()?.to_string_lossy().into_owned()
        };
        Some(Self {
            title,
            model_name,
            path,
        })
    }

    /// Whether a request's `sd_model_checkpoint` means this one: its title or model name,
    /// with or without A1111's ` [hash]` suffix, case-insensitive (webuiapi lower-cases).
    pub fn answers_to(&self, name: &str) -> bool {
        let name = name.trim();
        let name = match name.rfind(" [") {
            Some(at) if name.ends_with(']') => &name[..at],
            _ => name,
        };
        name.eq_ignore_ascii_case(&self.title) || name.eq_ignore_ascii_case(&self.model_name)
    }

    /// An entry of `GET sd-models`; `short_hash` once the model has been hashed.
    pub fn to_json(&self, short_hash: Option<&str>, sha256: Option<&str>) -> Value {
        json!({
            "title": self.title,
            "model_name": self.model_name,
            "hash": short_hash,
            "sha256": sha256,
            "filename": self.path.display().to_string(),
            "config": null,
        })
    }
}

/// Where checkpoints come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// One model, the only one listed.
    Single(PathBuf),
    /// Every SD checkpoint in a folder (rescanned by `POST refresh-checkpoints`).
    Folder(PathBuf),
}

impl ModelSource {
    /// The checkpoints there, sorted by title.
    pub fn scan(&self) -> Result<Vec<Checkpoint>> {
        match self {
            ModelSource::Single(path) => {
                Checkpoint::of(path.clone())
                    .map(|c| vec![c])
                    .ok_or_else(|| {
                        Error::invalid_argument(
                            "--model",
                            format!("{}: no file name", path.display()),
                        )
                    })
            }
            ModelSource::Folder(dir) => {
                let mut found: Vec<Checkpoint> = contained_entries(dir)?
                    .into_iter()
                    .filter(|path| is_checkpoint(path))
                    .filter_map(Checkpoint::of)
                    .collect();
                found.sort_by(|a, b| a.title.cmp(&b.title));
                Ok(found)
            }
        }
    }
}

fn is_checkpoint(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("model_index.json").is_file();
    }
    path.extension().is_some_and(|ext| ext == "safetensors")
}

/// The entries of `dir` whose real path stays inside `dir`'s real path (a symlink pointing
/// elsewhere is left out), sorted.
pub fn contained_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let root = dir.canonicalize().map_err(io)?;
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io)? {
        let Ok(entry) = entry else { continue };
        let Ok(real) = entry.path().canonicalize() else {
            continue;
        };
        if real.starts_with(&root) && real != root {
            entries.push(entry.path());
        }
    }
    entries.sort();
    Ok(entries)
}

/// The LoRA files of `--lora-dir`: name (file stem) and path, sorted by name.
pub fn lora_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(contained_entries(dir)?
        .into_iter()
        .filter(|path| path.is_file() && path.extension().is_some_and(|e| e == "safetensors"))
        .filter_map(|path| {
            let stem = path.file_stem()?.to_string_lossy().into_owned();
            Some((stem, path))
        })
        .collect())
}

/// The LoRA file a `<lora:NAME:…>` tag names, among `--lora-dir`'s files.
pub fn find_lora(dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    let Some(dir) = dir else {
        return Err(Error::invalid_argument(
            "prompt",
            format!("<lora:{name}:…>: this server has no LoRA folder (start it with --lora-dir)"),
        ));
    };
    let files = lora_files(dir)?;
    files
        .iter()
        .find(|(stem, _)| stem == name)
        .map(|(_, path)| path.clone())
        .ok_or_else(|| {
            let known: Vec<&str> = files.iter().map(|(stem, _)| stem.as_str()).collect();
            Error::invalid_argument(
                "prompt",
                format!(
                    "<lora:{name}:…>: no such LoRA; the server has: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sd-catalog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_folder_lists_single_files_and_diffusers_folders_only() {
        let dir = scratch("list");
        std::fs::write(dir.join("b.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        std::fs::create_dir_all(dir.join("a-folder")).unwrap();
        std::fs::write(dir.join("a-folder/model_index.json"), b"{}").unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        let found = ModelSource::Folder(dir.clone()).scan().unwrap();
        let titles: Vec<&str> = found.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["a-folder", "b.safetensors"]);
        assert_eq!(found[1].model_name, "b");
        assert!(found[1].answers_to("B.safetensors [0123456789]"));
        assert!(found[1].answers_to("b"));
        assert!(!found[1].answers_to("../b.safetensors"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_never_leave_the_folder() {
        let outside = scratch("outside");
        std::fs::write(outside.join("secret.safetensors"), b"x").unwrap();
        let dir = scratch("loras");
        std::fs::write(dir.join("style.safetensors"), b"x").unwrap();
        std::os::unix::fs::symlink(
            outside.join("secret.safetensors"),
            dir.join("escape.safetensors"),
        )
        .unwrap();
        assert_eq!(
            find_lora(Some(&dir), "style").unwrap(),
            dir.canonicalize().unwrap().join("style.safetensors")
        );
        for name in [
            "escape",
            "../outside/secret",
            "/etc/passwd",
            "..",
            "style.safetensors",
        ] {
            let err = find_lora(Some(&dir), name).unwrap_err().to_string();
            assert!(
                err.contains("no such LoRA") && err.contains("style"),
                "{name}: {err}"
            );
        }
        assert!(
            find_lora(None, "style")
                .unwrap_err()
                .to_string()
                .contains("--lora-dir")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
