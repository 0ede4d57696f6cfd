//! Where generated images go, checked before any work is done, and written so that no file is
//! ever half-written or lost.
//!
//! - [`image_paths`]: the file of each image of a batch (`NAME-1.png`, `NAME-2.png`, … in the
//!   named folder; a folder given as the output holds `sd-output.png` / `sd-output-N.png`).
//! - [`check_outputs`]: before the model loads (minutes of work hang on a typo otherwise): the
//!   folder exists and takes a new file, no output is a folder or a device, and no output is a
//!   file the run reads (the checkpoint, a file of its folder, the init image, the mask, a LoRA file).
//! - [`write_atomically`]: the bytes go to a temporary file beside the target, renamed over it
//!   only once complete: a full disk or a crash leaves the previous file whole.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sd_core::{Error, Result};

/// The file name used when the output names a folder.
pub const DEFAULT_FILE_NAME: &str = "sd-output.png";

/// How deep into an input folder (a diffusers model) its files are gathered for
/// [`check_outputs`], and how many at most: model folders are two levels of a few files.
const INPUT_FOLDER_DEPTH: usize = 4;
const INPUT_FOLDER_FILES: usize = 10_000;

/// The files `count` images go to. `output` is a file name, or a folder (an existing one, or a
/// path ending in `/`) that then holds [`DEFAULT_FILE_NAME`]. One image goes to that file; a
/// batch to `STEM-1.EXT`, `STEM-2.EXT`, … beside it (`.png` when the name has no extension).
pub fn image_paths(output: &Path, count: usize) -> Vec<PathBuf> {
    let names_folder = output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/');
    let (folder, name) = if names_folder {
        (output.to_path_buf(), DEFAULT_FILE_NAME.to_string())
    } else {
        let name = output.file_name().map_or_else(
            || DEFAULT_FILE_NAME.to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        // A bare name stays bare (`fox.png`, not `./fox.png`) in messages.
        (output.parent().unwrap_or(Path::new("")).to_path_buf(), name)
    };
    if count == 1 {
        return vec![folder.join(name)];
    }
    let (stem, extension) = match name.rfind('.') {
        Some(dot) => (&name[..dot], &name[dot + 1..]),
        None => (name.as_str(), "png"),
    };
    // `.png` is all extension: its images are numbered under the default stem.
    let stem = if stem.is_empty() { "sd-output" } else { stem };
    (1..=count)
        .map(|i| folder.join(format!("{stem}-{i}.{extension}")))
        .collect()
}

/// The folder a file path is in (`.` for a bare name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn refuse(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::invalid_argument("output", format!("{}: {reason}", path.display()))
}

/// Check, before anything is computed, that every one of `outputs` can be written and none of
/// them is one of `inputs` (files, or folders whose every file counts: a diffusers model).
pub fn check_outputs(outputs: &[PathBuf], inputs: &[PathBuf]) -> Result<()> {
    let input_files = gather_input_files(inputs);
    for output in outputs {
        let folder = folder_of(output);
        if !folder.is_dir() {
            return Err(refuse(output, "its folder does not exist"));
        }
        if let Ok(metadata) = std::fs::metadata(output) {
            // Renaming over a device (`/dev/full`) or a pipe would replace it, not write to it.
            if !metadata.is_file() {
                return Err(refuse(output, "exists and is not a regular file"));
            }
        }
        if let Some(input) = clashing_input(output, &folder, inputs, &input_files) {
            return Err(refuse(
                output,
                format!(
                    "is an input of this run ({}): refusing to write over it",
                    input.display()
                ),
            ));
        }
        probe_writable(&folder).map_err(|e| refuse(output, format!("cannot write there: {e}")))?;
    }
    Ok(())
}

/// Each file of `inputs`, with its metadata: the files themselves, and the files inside the
/// folders among them (a few levels deep).
fn gather_input_files(inputs: &[PathBuf]) -> Vec<(PathBuf, Metadata)> {
    let mut files = Vec::new();
    let mut pending: Vec<(PathBuf, usize)> = inputs.iter().map(|p| (p.clone(), 0)).collect();
    while let Some((path, depth)) = pending.pop() {
        if files.len() >= INPUT_FOLDER_FILES {
            break;
        }
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if depth < INPUT_FOLDER_DEPTH
                && let Ok(entries) = std::fs::read_dir(&path)
            {
                pending.extend(entries.flatten().map(|entry| (entry.path(), depth + 1)));
            }
        } else {
            files.push((path, metadata));
        }
    }
    files
}

/// The input `output` would overwrite: the same file (through any link or spelling), or a path
/// inside an input folder.
fn clashing_input<'a>(
    output: &Path,
    folder: &Path,
    inputs: &'a [PathBuf],
    input_files: &'a [(PathBuf, Metadata)],
) -> Option<&'a Path> {
    if let Ok(metadata) = std::fs::metadata(output)
        && let Some((input, _)) = input_files
            .iter()
            .find(|(_, input)| same_file(&metadata, input))
    {
        return Some(input);
    }
    let resolved = folder.canonicalize().ok()?.join(output.file_name()?);
    inputs.iter().map(PathBuf::as_path).find(|input| {
        input.is_dir()
            && input
                .canonicalize()
                .is_ok_and(|input| resolved.starts_with(input))
    })
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    // Without inode numbers: size and modification time, which a distinct file rarely shares.
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// A temporary file name beside `target`, unique within this process and across processes.
fn temporary_beside(target: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = target
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    folder_of(target).join(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Create and remove a file in `folder`: permissions, a read-only mount, a missing folder fail
/// here rather than after the generation.
fn probe_writable(folder: &Path) -> std::io::Result<()> {
    let probe = temporary_beside(&folder.join(DEFAULT_FILE_NAME));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Write `bytes` to `path` through a temporary file in the same folder, synced and then renamed
/// over `path`: readers see the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = temporary_beside(path);
    let written = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    written.map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    fn paths(output: &str, count: usize) -> Vec<String> {
        image_paths(Path::new(output), count)
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn batch_names_keep_the_folder_and_the_extension() {
        assert_eq!(paths("out/fox.png", 1), ["out/fox.png"]);
        assert_eq!(paths("out/fox.png", 2), ["out/fox-1.png", "out/fox-2.png"]);
        assert_eq!(paths("fox", 2), ["fox-1.png", "fox-2.png"]);
        assert_eq!(paths("a.b/fox.v2.png", 2)[1], "a.b/fox.v2-2.png");
    }

    #[test]
    fn a_folder_holds_the_default_name_for_one_image_or_many() {
        assert_eq!(paths("out/", 1), ["out/sd-output.png"]);
        assert_eq!(
            paths("out/", 2),
            ["out/sd-output-1.png", "out/sd-output-2.png"]
        );
        let here = std::env::temp_dir();
        let listed = image_paths(&here, 2);
        assert_eq!(listed[0], here.join("sd-output-1.png"));
    }

    /// A fresh folder for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sd-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("atomic");
        let target = dir.join("a.png");
        std::fs::write(&target, b"old").unwrap();
        write_atomically(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(leftovers(&dir).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_what_was_there_and_cleans_up() {
        let dir = scratch("atomic-fail");
        // A non-empty folder cannot be renamed over: the write fails at its last step.
        let target = dir.join("taken");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        let error = write_atomically(&target, b"new").unwrap_err().to_string();
        assert!(error.contains("taken"), "{error}");
        assert!(target.join("inside").is_dir());
        assert!(leftovers(&dir).is_empty());
    }

    #[test]
    fn outputs_that_are_inputs_devices_or_in_missing_folders_are_refused() {
        let dir = scratch("check");
        let model = dir.join("model");
        std::fs::create_dir_all(model.join("unet")).unwrap();
        std::fs::write(model.join("unet/config.json"), b"{}").unwrap();
        let image = dir.join("init.png");
        std::fs::write(&image, b"png").unwrap();
        let inputs = [model.clone(), image.clone()];
        let refused = |output: PathBuf, needle: &str| {
            let error = check_outputs(&[output], &inputs).unwrap_err().to_string();
            assert!(error.contains(needle), "`{needle}` missing from: {error}");
        };
        refused(image.clone(), "input of this run");
        refused(dir.join(".").join("init.png"), "input of this run");
        refused(model.join("unet/config.json"), "input of this run");
        std::fs::hard_link(&image, dir.join("link.png")).unwrap();
        refused(dir.join("link.png"), "input of this run");
        refused(model.join("new.png"), "input of this run");
        refused(dir.join("no/such/folder/x.png"), "folder does not exist");
        refused(PathBuf::from("/dev/null"), "not a regular file");
        assert!(check_outputs(&[dir.join("fine.png")], &inputs).is_ok());
    }

    #[test]
    fn a_name_that_is_only_an_extension_gets_the_default_stem() {
        assert_eq!(paths(".png", 2), ["sd-output-1.png", "sd-output-2.png"]);
        assert_eq!(paths(".png", 1), [".png"]);
    }
}
