//! Which model module a LoRA key adapts.
//!
//! LoRA files name modules four ways; all are resolved against the modules the loaded model
//! really has (its weight store's names), so a name is never guessed from its spelling alone:
//!
//! - kohya / A1111 with diffusers block names: `lora_unet_down_blocks_0_attentions_0_…_to_q`,
//!   `lora_te_text_model_encoder_layers_0_self_attn_q_proj` (the module path with `.` → `_`);
//! - kohya with LDM block names: `lora_unet_input_blocks_1_1_proj_in`, `middle_block_1_…`,
//!   `output_blocks_3_1_…` (the LDM module path, mapped with the same rules as LDM checkpoints);
//! - PEFT / diffusers: `unet.down_blocks.0.….to_q`, `text_encoder.text_model.….q_proj`;
//! - older diffusers attention processors: `unet.….attn1.processor.to_q_lora`.

use std::collections::{HashMap, HashSet};

use sd_core::Result;
use sd_core::weights::{Component, UnetLayout, WeightStore, ldm};

/// A module of the model: its component and diffusers path (`down_blocks.0.….to_q`), whose
/// weight is `<path>.weight`.
pub type Target = (Component, String);

/// Every module of a model that has a `weight`, by each name a LoRA file may give it.
#[derive(Debug, Default)]
pub struct ModuleNames {
    /// The model's modules by diffusers path (what PEFT / diffusers files name).
    modules: HashSet<Target>,
    /// The same by kohya name (`lora_unet_…`, `lora_te_…`; for the UNet, with diffusers and with
    /// LDM block names), without the tensor suffix.
    kohya: HashMap<String, Target>,
}

impl ModuleNames {
    /// The module names of `store`'s text encoder and UNet; `unet_layout` gives the UNet's LDM
    /// names (for kohya files written with them).
    pub fn of(store: &WeightStore, unet_layout: &UnetLayout) -> Result<Self> {
        let mut names = Self::default();
        let rules = ldm::unet_rules(unet_layout);
        for component in [Component::Unet, Component::TextEncoder] {
            for module in modules(store, component)? {
                let target = (component, module.clone());
                names
                    .kohya
                    .insert(kohya_name(component, &module), target.clone());
                if component == Component::Unet
                    && let Some(ldm_name) = ldm::to_ldm(&rules, &format!("{module}.weight"))
                {
                    let ldm_module = ldm_name.trim_end_matches(".weight");
                    names
                        .kohya
                        .insert(kohya_name(component, ldm_module), target.clone());
                }
                names.modules.insert(target);
            }
        }
        Ok(names)
    }

    /// The module `key` (a LoRA file's module key, without the tensor suffix) adapts.
    pub fn resolve(&self, key: &str) -> Option<Target> {
        if let Some(target) = self.kohya.get(key) {
            return Some(target.clone());
        }
        let (component, path) = if let Some(path) = key.strip_prefix("unet.") {
            (Component::Unet, path)
        } else if let Some(path) = key.strip_prefix("text_encoder.") {
            (Component::TextEncoder, path)
        } else {
            return None;
        };
        let path = old_processor_path(path).unwrap_or_else(|| path.to_string());
        // transformers 5 names CLIP's modules without the `text_model.` level the store keeps.
        let path = if component == Component::TextEncoder && !path.starts_with("text_model.") {
            format!("text_model.{path}")
        } else {
            path
        };
        self.modules.get(&(component, path)).cloned()
    }
}

/// kohya's name of a module: its path with `.` → `_` after `lora_unet_` or `lora_te_`.
pub fn kohya_name(component: Component, module: &str) -> String {
    let prefix = match component {
        Component::TextEncoder => "lora_te_",
        _ => "lora_unet_",
    };
    format!("{prefix}{}", module.replace('.', "_"))
}

/// `….attn1.processor.to_q_lora` → `….attn1.to_q` (`to_out_lora` → `to_out.0`).
fn old_processor_path(path: &str) -> Option<String> {
    let (attention, projection) = path.split_once(".processor.")?;
    let projection = projection.strip_suffix("_lora")?;
    let projection = if projection == "to_out" {
        "to_out.0"
    } else {
        projection
    };
    Some(format!("{attention}.{projection}"))
}

/// The modules of `component` that have a `weight`.
fn modules(store: &WeightStore, component: Component) -> Result<Vec<String>> {
    if !store.has_component(component) {
        return Ok(Vec::new());
    }
    Ok(store
        .component(component)?
        .names()
        .into_iter()
        .filter_map(|name| name.strip_suffix(".weight").map(str::to_string))
        .collect())
}
