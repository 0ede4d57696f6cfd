//! Textual-inversion embedding files: what A1111, kohya and diffusers write, read into
//! [`TextualInversion`]s named by their file stem (as A1111 names them).
//!
//! The format is told from the content, not the extension:
//!
//! | file | holds |
//! |---|---|
//! | `.safetensors` (A1111 / kohya) | `emb_params` `[n, width]` |
//! | `.safetensors` (diffusers `learned_embeds`) | one tensor, `{"<token>": [width]}` or `[n, width]` |
//! | `.pt` / `.bin` (A1111, textual_inversion) | `{"string_to_param": {"*": [n, width]}, …}` (a dict or a `ParameterDict`) |
//! | `.pt` / `.bin` (diffusers, kohya) | `{"<token>": tensor}` or `{"emb_params": tensor}` |
//!
//! `.pt` / `.bin` files are read by [`crate::torch_file`], which runs nothing: a file whose
//! pickle asks for anything beyond torch's tensor and dict globals is refused, naming the global.
//! Whether an embedding fits a model (its width) is checked where it meets the text encoder
//! ([`sd_clip::PromptEmbeddings::new`]).
//!
//! ```no_run
//! use stable_diffusion::embeddings;
//! use stable_diffusion::{GenerationRequest, LoadOptions, StableDiffusion};
//! # fn main() -> stable_diffusion::Result<()> {
//! // At load: files and folders (a folder's unreadable files are skipped and reported).
//! let options = LoadOptions::default()
//!     .embedding("EasyNegative.safetensors")
//!     .embedding_dir("embeddings");
//! let sd = StableDiffusion::load("v1-5-pruned-emaonly.safetensors", options)?;
//! for embedding in sd.embeddings().iter() {
//!     println!("{}: {} vectors", embedding.name(), embedding.len());
//! }
//! // Prompts name them (A1111 mode: anywhere, with emphasis applying to all their vectors).
//! let request = GenerationRequest::new("a castle, (mystyle:1.2)").negative_prompt("EasyNegative");
//! let _ = sd.generate(&request)?;
//! // Later, from any thread: another set (e.g. the folder read again).
//! let folder = embeddings::load_dir("embeddings")?;
//! sd.set_embeddings(folder.loaded)?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use ndarray::Array2;
use sd_clip::TextualInversion;
use sd_core::weights::SafetensorsFile;
use sd_core::{Error, HostTensor, Result};

use crate::torch_file::TorchFile;

/// The file extensions [`load_dir`] reads.
pub const EXTENSIONS: [&str; 3] = ["safetensors", "pt", "bin"];

/// Read the embedding in `path`, named by the file stem.
pub fn load(path: impl AsRef<Path>) -> Result<TextualInversion> {
    let path = path.as_ref();
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    load_named(path, name)
}

/// Read the embedding in `path` under another name than its file stem.
pub fn load_named(path: impl AsRef<Path>, name: impl Into<String>) -> Result<TextualInversion> {
    let path = path.as_ref();
    let mut magic = [0u8; 9];
    let read = read_prefix(path, &mut magic)?;
    let torch_save =
        magic[..read].starts_with(b"PK\x03\x04") || magic[..read].starts_with(b"\x80\x02\x8a");
    let (key, tensor) = if torch_save {
        from_torch_file(&TorchFile::open(path)?)?
    } else if read == 9 && magic[8] == b'{' {
        from_safetensors(&SafetensorsFile::open(path)?)?
    } else {
        return Err(invalid(
            path,
            "neither a safetensors file nor a torch.save file (.pt / .bin, zip or legacy)",
        ));
    };
    let vectors = as_vectors(tensor, path, &key)?;
    TextualInversion::new(name, vectors)
        .map(|e| e.with_source(path))
        .map_err(|e| invalid(path, e.to_string()))
}

/// What [`load_dir`] / [`gather`] found: the embeddings read, and the files skipped with why.
#[derive(Debug, Default)]
pub struct EmbeddingDir {
    pub loaded: Vec<TextualInversion>,
    pub skipped: Vec<(PathBuf, Error)>,
}

/// Every `.safetensors`, `.pt` and `.bin` file in `dir` and its sub-folders (as A1111 walks
/// them), named by file stem. A file that is not a readable embedding is skipped and reported,
/// as A1111 lists it under "skipped", rather than failing the whole folder; a missing folder,
/// and two files of the same stem (which one a prompt means would be a guess), are errors.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<EmbeddingDir> {
    let mut out = EmbeddingDir::default();
    let mut seen: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for path in files_in(dir.as_ref())? {
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(first) = seen.insert(stem.clone(), path.clone()) {
            return Err(invalid(
                &path,
                format!(
                    "embedding name `{stem}` is also {}: rename one of them",
                    first.display()
                ),
            ));
        }
        match load(&path) {
            Ok(embedding) => out.loaded.push(embedding),
            Err(error) => out.skipped.push((path, error)),
        }
    }
    Ok(out)
}

/// The embeddings of `files` and of the folders `dirs` for a text encoder `width` wide, and
/// the folder files skipped (unreadable, or of another width) with why. An explicit file fails
/// on any error, its width checked where it meets the encoder.
pub fn gather(files: &[PathBuf], dirs: &[PathBuf], width: usize) -> Result<EmbeddingDir> {
    let mut out = EmbeddingDir {
        loaded: files.iter().map(load).collect::<Result<Vec<_>>>()?,
        skipped: Vec::new(),
    };
    for dir in dirs {
        let found = load_dir(dir)?;
        out.skipped.extend(found.skipped);
        for embedding in found.loaded {
            if embedding.width() == width {
                out.loaded.push(embedding);
                continue;
            }
            let path = embedding
                .source()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let reason = format!(
                "vectors {} wide, the text encoder's are {width}",
                embedding.width()
            );
            out.skipped.push((path.clone(), invalid(&path, reason)));
        }
    }
    Ok(out)
}

/// The embedding files in `dir` and its sub-folders (symbolic links to folders are not
/// followed, so a link cannot make the walk loop), sorted by path.
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_type().map_err(io)?.is_dir() {
            files.extend(files_in(&path)?);
            continue;
        }
        let known = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if known && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The first bytes of `path` (fewer if it is shorter), their count returned.
fn read_prefix(path: &Path, buf: &mut [u8]) -> Result<usize> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut read = 0;
    while read < buf.len() {
        match file.read(&mut buf[read..]).map_err(io)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

/// The embedding tensor of a safetensors file: `emb_params`, else its only tensor.
fn from_safetensors(file: &SafetensorsFile) -> Result<(String, HostTensor)> {
    let mut names: Vec<&str> = file.names().collect();
    names.sort_unstable();
    let key = pick_key(&names, file.path())?;
    Ok((key.to_string(), file.get(key)?))
}

/// The embedding tensor of a torch file: `string_to_param`'s only entry (A1111), else
/// `emb_params`, else the only entry of the saved dict.
fn from_torch_file(file: &TorchFile) -> Result<(String, HostTensor)> {
    let pickle = file.pickle();
    let root = pickle.root();
    let (dict, what) = match pickle.dict_get(root, "string_to_param") {
        Some(params) => (params, "string_to_param"),
        None => (root, "the saved dict"),
    };
    let entries = pickle.dict(dict).ok_or_else(|| {
        invalid(
            file.path(),
            format!("{what} is not a dict of tensors: {:?}", pickle.value(dict)),
        )
    })?;
    let names: Vec<&str> = entries.iter().filter_map(|&(k, _)| pickle.str(k)).collect();
    let key = if what == "string_to_param" {
        match names[..] {
            [only] => only,
            _ => {
                return Err(invalid(
                    file.path(),
                    format!("string_to_param holds {} terms, not one", entries.len()),
                ));
            }
        }
    } else {
        pick_key(&names, file.path())?
    };
    let value = pickle
        .dict_get(dict, key)
        .ok_or_else(|| invalid(file.path(), format!("no entry {key}")))?;
    let tensor = pickle.tensor(value).ok_or_else(|| {
        invalid(
            file.path(),
            format!("{key} is not a tensor: {:?}", pickle.value(value)),
        )
    })?;
    Ok((key.to_string(), file.tensor(tensor, key)?))
}

/// Which key of a flat file holds the embedding: `emb_params`, else the only key. SDXL
/// embeddings (`clip_l` + `clip_g`) and other dicts are errors that list the keys.
fn pick_key<'a>(names: &[&'a str], path: &Path) -> Result<&'a str> {
    if let Some(key) = names.iter().find(|&&n| n == "emb_params") {
        return Ok(key);
    }
    match names {
        [only] => Ok(only),
        _ if names.contains(&"clip_l") && names.contains(&"clip_g") => Err(invalid(
            path,
            "an SDXL embedding (clip_l and clip_g vectors); this is an SD 1.x pipeline",
        )),
        _ => Err(invalid(
            path,
            format!(
                "expected emb_params, string_to_param or a single tensor; found keys [{}]",
                names.join(", ")
            ),
        )),
    }
}

/// `[width]` or `[n, width]` as `[n, width]`.
fn as_vectors(tensor: HostTensor, path: &Path, key: &str) -> Result<Array2<f32>> {
    let shape = tensor.shape().to_vec();
    let rows = match shape[..] {
        [width] => (1, width),
        [n, width] => (n, width),
        _ => {
            return Err(invalid(
                path,
                format!("tensor {key} has shape {shape:?}, expected [n, width] or [width]"),
            ));
        }
    };
    tensor
        .into_shape_with_order(rows)
        .map_err(|e| invalid(path, format!("tensor {key}: {e}")))
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidEmbedding {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
