//! Finding the weight files of a diffusers pipeline folder.
//!
//! `model_index.json` lists the components; each lives in its own folder as
//! `diffusion_pytorch_model.safetensors` (diffusers models) or `model.safetensors` (transformers
//! models), possibly saved as an `.fp16` variant, possibly sharded with a `….safetensors.index.json`
//! whose `weight_map` names the shard files.

use std::collections::BTreeSet;
use std::path::{Component as PathPart, Path, PathBuf};

use serde_json::Value;

use super::names::Component;
use crate::error::{Error, Result};

/// The file that marks a folder as a diffusers pipeline.
pub const MODEL_INDEX: &str = "model_index.json";

/// Weight file stems, diffusers' before transformers'.
const STEMS: [&str; 2] = ["diffusion_pytorch_model", "model"];
/// Saved variants, the full-precision default first.
const VARIANTS: [&str; 2] = ["", ".fp16"];

/// A pipeline folder's index and the weight files of each component it lists.
#[derive(Debug)]
pub(crate) struct PipelineFolder {
    pub model_index_path: PathBuf,
    pub model_index: Value,
    pub components: Vec<(Component, Vec<PathBuf>)>,
}

/// Read `dir/model_index.json` and locate the weights of each SD component it lists.
pub(crate) fn read_pipeline_folder(dir: &Path) -> Result<PipelineFolder> {
    let model_index_path = dir.join(MODEL_INDEX);
    let model_index = read_json(&model_index_path)?;
    let mut components = Vec::new();
    for component in Component::ALL {
        if lists_component(&model_index, component) {
            let files = component_files(&dir.join(component.folder_name()))?;
            components.push((component, files));
        }
    }
    Ok(PipelineFolder {
        model_index_path,
        model_index,
        components,
    })
}

/// `"unet": ["diffusers", "UNet2DConditionModel"]` lists a component; absent or
/// `[null, null]` doesn't.
fn lists_component(model_index: &Value, component: Component) -> bool {
    model_index
        .get(component.folder_name())
        .and_then(Value::as_array)
        .and_then(|entry| entry.first())
        .is_some_and(|library| !library.is_null())
}

/// The safetensors files holding one component's weights: a single file or the shards an
/// index names.
pub fn component_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for variant in VARIANTS {
        for stem in STEMS {
            let single = dir.join(format!("{stem}{variant}.safetensors"));
            if single.is_file() {
                return Ok(vec![single]);
            }
            let index = dir.join(format!("{stem}{variant}.safetensors.index.json"));
            if index.is_file() {
                return shard_files(&index);
            }
        }
    }
    Err(Error::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no safetensors weights (looked for diffusion_pytorch_model.safetensors, \
             model.safetensors, their .fp16 variants and sharded indexes; .bin files are not read)",
        ),
    })
}

/// The distinct shard files of a sharded checkpoint's `weight_map`, in name order.
fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>> {
    let index = read_json(index_path)?;
    let bad = |reason: &str| Error::Config {
        path: index_path.to_path_buf(),
        field: "weight_map".to_string(),
        reason: reason.to_string(),
    };
    let weight_map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing or not an object"))?;
    let mut shards = BTreeSet::new();
    for shard in weight_map.values() {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad("a shard file name is not a string"))?;
        // A shard must sit next to its index: refuse paths that lead elsewhere.
        let mut parts = Path::new(shard).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(PathPart::Normal(_)), None)
        ) {
            return Err(bad(&format!("shard `{shard}` is not a plain file name")));
        }
        shards.insert(shard.to_string());
    }
    if shards.is_empty() {
        return Err(bad("names no shard files"));
    }
    let dir = index_path.parent().unwrap_or(Path::new(""));
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    crate::config_file::read_config(path)
}
