//! LDM single-file key names → diffusers names, as rules derived from the architecture.
//!
//! The original CompVis/LDM code numbers its UNet modules in one flat sequence
//! (`input_blocks.N`, `middle_block.N`, `output_blocks.N`) where diffusers nests them by level
//! (`down_blocks.i.resnets.j`). Which `N` is which `(i, j)` follows from the number of levels,
//! the resnets per level and whether a level has attention, so the rules are generated from those
//! ([`UnetLayout`]) instead of being written out for SD 1.5's four levels. Each rule maps a module
//! prefix; the parameter names inside a module are renamed by a small table per module kind.
//!
//! A single file holds three models under three prefixes: `model.diffusion_model.` (UNet),
//! `first_stage_model.` (VAE) and `cond_stage_model.transformer.` (CLIP text encoder, whose names
//! are already transformers' own).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::diffusers::read_json;
use crate::error::{Error, Result};

/// Key prefix of the UNet in an LDM single file.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Key prefix of the VAE in an LDM single file.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Key prefix of the CLIP text encoder in an LDM single file.
pub const TEXT_ENCODER_PREFIX: &str = "cond_stage_model.transformer.";
/// Key prefix of the UNet's exponential-moving-average copy in full (non-pruned) checkpoints.
pub const EMA_PREFIX: &str = "model_ema.";

/// The EMA twin of a UNet key: the LDM trainer stores `model.diffusion_model.a.b.c` as
/// `model_ema.diffusion_modelabc` (its buffer names may not contain dots).
pub fn ema_key(unet_key: &str) -> Option<String> {
    let rest = unet_key.strip_prefix("model.")?;
    Some(format!("{EMA_PREFIX}{}", rest.replace('.', "")))
}

/// What the LDM↔diffusers UNet numbering depends on; read from a diffusers `unet/config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnetLayout {
    /// Resnets per down level (the matching up level has one more).
    pub layers_per_level: Vec<usize>,
    /// Whether each down level (diffusers `down_blocks.i`) has cross-attention.
    pub down_attention: Vec<bool>,
    /// Whether each up level (diffusers `up_blocks.i`, deepest first) has cross-attention.
    pub up_attention: Vec<bool>,
}

/// What the LDM↔diffusers VAE numbering depends on; read from a diffusers `vae/config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaeLayout {
    /// Number of resolution levels (`len(block_out_channels)`).
    pub levels: usize,
    /// Resnets per encoder level; decoder levels have one more.
    pub layers_per_block: usize,
}

/// The layouts needed to read an LDM single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdmLayout {
    pub unet: UnetLayout,
    pub vae: VaeLayout,
}

impl LdmLayout {
    /// SD 1.x: UNet of four levels, two resnets each, attention in all but the deepest;
    /// VAE of four levels.
    pub fn sd15() -> Self {
        Self {
            unet: UnetLayout {
                layers_per_level: vec![2; 4],
                down_attention: vec![true, true, true, false],
                up_attention: vec![false, true, true, true],
            },
            vae: VaeLayout {
                levels: 4,
                layers_per_block: 2,
            },
        }
    }

    /// Read both layouts from a diffusers pipeline folder's `unet/config.json` and
    /// `vae/config.json` (the configs the model code is built from).
    pub fn from_diffusers_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Ok(Self {
            unet: UnetLayout::from_config_file(dir.join("unet").join("config.json"))?,
            vae: VaeLayout::from_config_file(dir.join("vae").join("config.json"))?,
        })
    }
}

/// What one numbered LDM UNet block (`input_blocks.N` / `output_blocks.N`) holds.
#[derive(Debug, Default, Clone, Copy)]
struct BlockContents {
    resnet: bool,
    attention: bool,
    downsampler: bool,
}

/// The contents of each `model.diffusion_model.<list>.N` block of a file, by `N`.
fn scan_blocks(keys: &[&str], list: &str) -> BTreeMap<usize, BlockContents> {
    let mut blocks = BTreeMap::<usize, BlockContents>::new();
    for key in keys {
        let Some(rest) = key
            .strip_prefix(UNET_PREFIX)
            .and_then(|k| k.strip_prefix(list))
            .and_then(|k| k.strip_prefix('.'))
        else {
            continue;
        };
        let Some((index, inner)) = rest.split_once('.') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let block = blocks.entry(index).or_default();
        if inner.starts_with("0.op.") {
            block.downsampler = true;
        } else if inner.starts_with("0.") {
            block.resnet = true;
        } else if inner.starts_with("1.") && !inner.starts_with("1.conv.") {
            block.attention = true;
        }
    }
    blocks
}

/// The largest `N` in keys `<prefix>N.…`, if any.
fn max_index(keys: &[&str], prefix: &str) -> Option<usize> {
    keys.iter()
        .filter_map(|k| {
            k.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
}

impl LdmLayout {
    /// Read the layout off an LDM single file's own keys: levels and resnets per level from
    /// where the UNet's downsamplers sit, attention from which blocks have a `.1` transformer,
    /// and the VAE's levels and resnets from its encoder. `path` names the file in errors.
    pub fn infer(path: &Path, keys: &[&str]) -> Result<Self> {
        let irregular = |what: &str| Error::UnsupportedModel {
            path: path.to_path_buf(),
            reason: format!("its UNet blocks do not follow the SD 1.x pattern: {what}"),
        };
        let input = scan_blocks(keys, "input_blocks");
        let output = scan_blocks(keys, "output_blocks");
        if input.is_empty() || output.is_empty() {
            return Err(irregular("no input_blocks or output_blocks"));
        }
        let contiguous =
            |blocks: &BTreeMap<usize, BlockContents>| blocks.keys().copied().eq(0..blocks.len());
        if !contiguous(&input) || !contiguous(&output) {
            return Err(irregular("block numbers have gaps"));
        }

        // input_blocks.0 is conv_in; levels end at each downsampler and at the last block.
        let mut layers_per_level = Vec::new();
        let mut down_attention = Vec::new();
        let (mut layers, mut attention) = (0, false);
        for block in input.values().skip(1) {
            if block.downsampler {
                layers_per_level.push(layers);
                down_attention.push(attention);
                (layers, attention) = (0, false);
            } else if block.resnet {
                layers += 1;
                attention |= block.attention;
            } else {
                return Err(irregular(
                    "an input block with neither resnet nor downsampler",
                ));
            }
        }
        layers_per_level.push(layers);
        down_attention.push(attention);
        if layers_per_level.contains(&0) {
            return Err(irregular("a level without resnets"));
        }

        // Output blocks, deepest level first, one more resnet per level than on the way down.
        let levels = layers_per_level.len();
        let mut blocks = output.values();
        let mut up_attention = Vec::with_capacity(levels);
        for up in 0..levels {
            let mut attention = false;
            for _ in 0..=layers_per_level[levels - 1 - up] {
                let block = blocks
                    .next()
                    .ok_or_else(|| irregular("too few output blocks"))?;
                attention |= block.attention;
            }
            up_attention.push(attention);
        }
        if blocks.next().is_some() {
            return Err(irregular("more output blocks than input blocks imply"));
        }

        let sd15_vae = Self::sd15().vae;
        let vae_prefix = format!("{VAE_PREFIX}encoder.down.");
        let vae = match max_index(keys, &vae_prefix) {
            Some(last_level) => VaeLayout {
                levels: last_level + 1,
                layers_per_block: max_index(keys, &format!("{vae_prefix}0.block."))
                    .map_or(sd15_vae.layers_per_block, |j| j + 1),
            },
            None => sd15_vae,
        };
        Ok(Self {
            unet: UnetLayout {
                layers_per_level,
                down_attention,
                up_attention,
            },
            vae,
        })
    }
}

impl UnetLayout {
    /// Read `block_out_channels`, `layers_per_block`, `down_block_types` and `up_block_types`
    /// from a diffusers UNet `config.json`.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_config(&read_json(path)?, path)
    }

    /// As [`Self::from_config_file`], from parsed JSON; `path` names it in errors.
    pub fn from_config(config: &Value, path: &Path) -> Result<Self> {
        let levels = levels(config, path)?;
        let layers_per_level = match config.get("layers_per_block") {
            Some(Value::Array(per_level)) => {
                let counts = per_level
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
                    .collect::<Option<Vec<usize>>>();
                match counts {
                    Some(counts) if counts.len() == levels => counts,
                    _ => {
                        return Err(config_error(
                            path,
                            "layers_per_block",
                            format!("expected {levels} non-negative integers"),
                        ));
                    }
                }
            }
            Some(v) => {
                let n = v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        config_error(path, "layers_per_block", "expected an integer or a list")
                    })?;
                vec![n; levels]
            }
            None => return Err(config_error(path, "layers_per_block", "missing")),
        };
        Ok(Self {
            layers_per_level,
            down_attention: attention_flags(config, path, "down_block_types", levels)?,
            up_attention: attention_flags(config, path, "up_block_types", levels)?,
        })
    }

    fn levels(&self) -> usize {
        self.layers_per_level.len()
    }
}

impl VaeLayout {
    /// Read `block_out_channels` and `layers_per_block` from a diffusers VAE `config.json`.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_config(&read_json(path)?, path)
    }

    /// As [`Self::from_config_file`], from parsed JSON; `path` names it in errors.
    pub fn from_config(config: &Value, path: &Path) -> Result<Self> {
        let layers_per_block = config
            .get("layers_per_block")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| config_error(path, "layers_per_block", "expected an integer"))?;
        Ok(Self {
            levels: levels(config, path)?,
            layers_per_block,
        })
    }
}

fn config_error(path: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn levels(config: &Value, path: &Path) -> Result<usize> {
    match config.get("block_out_channels").and_then(Value::as_array) {
        Some(channels) if !channels.is_empty() => Ok(channels.len()),
        _ => Err(config_error(
            path,
            "block_out_channels",
            "expected a non-empty list",
        )),
    }
}

/// `CrossAttnDownBlock2D` / `CrossAttnUpBlock2D` carry attention; the plain blocks don't.
fn attention_flags(config: &Value, path: &Path, field: &str, levels: usize) -> Result<Vec<bool>> {
    let flags = config
        .get(field)
        .and_then(Value::as_array)
        .and_then(|types| {
            types
                .iter()
                .map(|t| t.as_str().map(|s| s.starts_with("CrossAttn")))
                .collect::<Option<Vec<bool>>>()
        });
    match flags {
        Some(flags) if flags.len() == levels => Ok(flags),
        _ => Err(config_error(
            path,
            field,
            format!("expected {levels} block type names"),
        )),
    }
}

/// How the parameter names inside a mapped module are renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// Names inside are the same in both layouts (attention transformers, plain convs/linears).
    Same,
    /// UNet `ResBlock` ↔ diffusers `ResnetBlock2D`.
    UnetResnet,
    /// VAE `ResnetBlock` ↔ diffusers `ResnetBlock2D`.
    VaeResnet,
    /// VAE `AttnBlock` (1×1 convs) ↔ diffusers `Attention` (linears).
    VaeAttention,
}

impl ModuleKind {
    /// (LDM submodule, diffusers submodule) pairs; `None` means names pass through unchanged.
    fn renames(self) -> Option<&'static [(&'static str, &'static str)]> {
        match self {
            ModuleKind::Same => None,
            ModuleKind::UnetResnet => Some(&[
                ("in_layers.0", "norm1"),
                ("in_layers.2", "conv1"),
                ("emb_layers.1", "time_emb_proj"),
                ("out_layers.0", "norm2"),
                ("out_layers.3", "conv2"),
                ("skip_connection", "conv_shortcut"),
            ]),
            ModuleKind::VaeResnet => Some(&[
                ("norm1", "norm1"),
                ("conv1", "conv1"),
                ("norm2", "norm2"),
                ("conv2", "conv2"),
                ("nin_shortcut", "conv_shortcut"),
            ]),
            ModuleKind::VaeAttention => Some(&[
                ("norm", "group_norm"),
                ("q", "to_q"),
                ("k", "to_k"),
                ("v", "to_v"),
                ("proj_out", "to_out.0"),
            ]),
        }
    }
}

/// One module: its LDM prefix, its diffusers prefix, and how names inside it change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRule {
    pub ldm: String,
    pub diffusers: String,
    pub kind: ModuleKind,
}

impl ModuleRule {
    fn new(ldm: impl Into<String>, diffusers: impl Into<String>, kind: ModuleKind) -> Self {
        Self {
            ldm: ldm.into(),
            diffusers: diffusers.into(),
            kind,
        }
    }
}

/// The module rules of a UNet with this layout (names without [`UNET_PREFIX`]).
pub fn unet_rules(layout: &UnetLayout) -> Vec<ModuleRule> {
    use ModuleKind::{Same, UnetResnet};
    let mut rules = vec![
        ModuleRule::new("time_embed.0", "time_embedding.linear_1", Same),
        ModuleRule::new("time_embed.2", "time_embedding.linear_2", Same),
        ModuleRule::new("input_blocks.0.0", "conv_in", Same),
        ModuleRule::new("middle_block.0", "mid_block.resnets.0", UnetResnet),
        ModuleRule::new("middle_block.1", "mid_block.attentions.0", Same),
        ModuleRule::new("middle_block.2", "mid_block.resnets.1", UnetResnet),
        ModuleRule::new("out.0", "conv_norm_out", Same),
        ModuleRule::new("out.2", "conv_out", Same),
    ];
    let levels = layout.levels();

    // Down path: after conv_in (input_blocks.0), each level contributes one input block per
    // resnet (resnet at .0, its attention at .1), then one for the downsampler, except the last.
    let mut block = 1;
    for level in 0..levels {
        for j in 0..layout.layers_per_level[level] {
            let down = format!("down_blocks.{level}");
            rules.push(ModuleRule::new(
                format!("input_blocks.{block}.0"),
                format!("{down}.resnets.{j}"),
                UnetResnet,
            ));
            if layout.down_attention[level] {
                rules.push(ModuleRule::new(
                    format!("input_blocks.{block}.1"),
                    format!("{down}.attentions.{j}"),
                    Same,
                ));
            }
            block += 1;
        }
        if level + 1 < levels {
            rules.push(ModuleRule::new(
                format!("input_blocks.{block}.0.op"),
                format!("down_blocks.{level}.downsamplers.0.conv"),
                Same,
            ));
            block += 1;
        }
    }

    // Up path, deepest level first: one output block per resnet (one more resnet than the
    // matching down level, for the skip from its downsampler), attention at .1; the level's last
    // output block also holds the upsampler, after the attention if there is one.
    let mut block = 0;
    for up in 0..levels {
        let resnets = layout.layers_per_level[levels - 1 - up] + 1;
        let has_attention = layout.up_attention[up];
        for j in 0..resnets {
            let up_block = format!("up_blocks.{up}");
            rules.push(ModuleRule::new(
                format!("output_blocks.{block}.0"),
                format!("{up_block}.resnets.{j}"),
                UnetResnet,
            ));
            if has_attention {
                rules.push(ModuleRule::new(
                    format!("output_blocks.{block}.1"),
                    format!("{up_block}.attentions.{j}"),
                    Same,
                ));
            }
            if j + 1 == resnets && up + 1 < levels {
                let slot = 1 + usize::from(has_attention);
                rules.push(ModuleRule::new(
                    format!("output_blocks.{block}.{slot}.conv"),
                    format!("{up_block}.upsamplers.0.conv"),
                    Same,
                ));
            }
            block += 1;
        }
    }
    rules
}

/// The module rules of a VAE with this layout (names without [`VAE_PREFIX`]).
pub fn vae_rules(layout: &VaeLayout) -> Vec<ModuleRule> {
    use ModuleKind::{Same, VaeAttention, VaeResnet};
    let mut rules = Vec::new();
    for coder in ["encoder", "decoder"] {
        for (ldm, diffusers, kind) in [
            ("conv_in", "conv_in", Same),
            ("conv_out", "conv_out", Same),
            ("norm_out", "conv_norm_out", Same),
            ("mid.block_1", "mid_block.resnets.0", VaeResnet),
            ("mid.attn_1", "mid_block.attentions.0", VaeAttention),
            ("mid.block_2", "mid_block.resnets.1", VaeResnet),
        ] {
            rules.push(ModuleRule::new(
                format!("{coder}.{ldm}"),
                format!("{coder}.{diffusers}"),
                kind,
            ));
        }
    }
    for (ldm, diffusers) in [
        ("quant_conv", "quant_conv"),
        ("post_quant_conv", "post_quant_conv"),
    ] {
        rules.push(ModuleRule::new(ldm, diffusers, Same));
    }
    // LDM numbers both paths by resolution (level 0 = full size); diffusers numbers the decoder
    // in execution order, so LDM `up.0` is diffusers' last up block. The resnet index inside a
    // level is the same in both.
    let levels = layout.levels;
    for level in 0..levels {
        let up = levels - 1 - level;
        for j in 0..layout.layers_per_block {
            rules.push(ModuleRule::new(
                format!("encoder.down.{level}.block.{j}"),
                format!("encoder.down_blocks.{level}.resnets.{j}"),
                VaeResnet,
            ));
        }
        for j in 0..=layout.layers_per_block {
            rules.push(ModuleRule::new(
                format!("decoder.up.{level}.block.{j}"),
                format!("decoder.up_blocks.{up}.resnets.{j}"),
                VaeResnet,
            ));
        }
        if level + 1 < levels {
            rules.push(ModuleRule::new(
                format!("encoder.down.{level}.downsample.conv"),
                format!("encoder.down_blocks.{level}.downsamplers.0.conv"),
                Same,
            ));
        }
        if level > 0 {
            rules.push(ModuleRule::new(
                format!("decoder.up.{level}.upsample.conv"),
                format!("decoder.up_blocks.{up}.upsamplers.0.conv"),
                Same,
            ));
        }
    }
    rules
}

/// Translate `key` (component prefix removed) with the module rule whose LDM prefix is the
/// longest match at a `.` boundary. `None` if no rule covers the key.
pub fn to_diffusers(rules: &[ModuleRule], key: &str) -> Option<String> {
    translate(rules, key, Side::Ldm)
}

/// The inverse of [`to_diffusers`]: the LDM name of the diffusers name `key` (component prefix
/// removed), with the rule whose diffusers prefix is the longest match. `None` if no rule covers
/// it. LoRA files written by LDM-side tools name their modules this way.
pub fn to_ldm(rules: &[ModuleRule], key: &str) -> Option<String> {
    translate(rules, key, Side::Diffusers)
}

/// Which naming a key to translate is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Ldm,
    Diffusers,
}

impl Side {
    /// A pair of names as (the name on this side, the name on the other side).
    fn orient<'a>(self, ldm: &'a str, diffusers: &'a str) -> (&'a str, &'a str) {
        match self {
            Side::Ldm => (ldm, diffusers),
            Side::Diffusers => (diffusers, ldm),
        }
    }
}

/// `key`, named on side `from`, in the other naming: the rule with the longest matching module
/// prefix on that side, then the parameter renames of its module kind.
fn translate(rules: &[ModuleRule], key: &str, from: Side) -> Option<String> {
    let (_, target_prefix, kind, rest) = rules
        .iter()
        .filter_map(|rule| {
            let (source, target) = from.orient(&rule.ldm, &rule.diffusers);
            let rest = key.strip_prefix(source)?.strip_prefix('.')?;
            Some((source.len(), target, rule.kind, rest))
        })
        .max_by_key(|&(matched, ..)| matched)?;
    let inner = match kind.renames() {
        None => rest.to_string(),
        Some(renames) => renames.iter().find_map(|&(ldm, diffusers)| {
            let (source, target) = from.orient(ldm, diffusers);
            let param = rest.strip_prefix(source)?.strip_prefix('.')?;
            Some(format!("{target}.{param}"))
        })?,
    };
    Some(format!("{target_prefix}.{inner}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15_unet(key: &str) -> Option<String> {
        to_diffusers(&unet_rules(&LdmLayout::sd15().unet), key)
    }

    #[test]
    fn to_ldm_inverts_to_diffusers() {
        let rules = unet_rules(&LdmLayout::sd15().unet);
        for ldm in [
            "input_blocks.1.0.in_layers.2.weight",
            "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
            "middle_block.2.skip_connection.weight",
            "output_blocks.5.2.conv.bias",
            "out.2.weight",
        ] {
            let diffusers = to_diffusers(&rules, ldm).expect("an SD 1.5 LDM name");
            assert_eq!(
                to_ldm(&rules, &diffusers).as_deref(),
                Some(ldm),
                "{diffusers}"
            );
        }
    }

    #[test]
    fn sd15_unet_landmarks() {
        let cases = [
            ("input_blocks.0.0.weight", "conv_in.weight"),
            (
                "input_blocks.1.0.in_layers.2.weight",
                "down_blocks.0.resnets.0.conv1.weight",
            ),
            (
                "input_blocks.2.1.transformer_blocks.0.attn1.to_q.weight",
                "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight",
            ),
            (
                "input_blocks.3.0.op.bias",
                "down_blocks.0.downsamplers.0.conv.bias",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "input_blocks.11.0.emb_layers.1.weight",
                "down_blocks.3.resnets.1.time_emb_proj.weight",
            ),
            (
                "middle_block.1.proj_in.weight",
                "mid_block.attentions.0.proj_in.weight",
            ),
            (
                "middle_block.2.out_layers.3.bias",
                "mid_block.resnets.1.conv2.bias",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.0.weight",
                "up_blocks.3.resnets.2.norm2.weight",
            ),
            ("time_embed.2.weight", "time_embedding.linear_2.weight"),
            ("out.0.bias", "conv_norm_out.bias"),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(sd15_unet(ldm).as_deref(), Some(diffusers), "{ldm}");
        }
    }

    #[test]
    fn unknown_unet_keys_are_not_mapped() {
        assert_eq!(sd15_unet("label_emb.0.0.weight"), None);
        assert_eq!(sd15_unet("input_blocks.1.0.in_layers.1.weight"), None);
        // No attention at the deepest down level in SD 1.5.
        assert_eq!(sd15_unet("input_blocks.10.1.norm.weight"), None);
        assert_eq!(sd15_unet("input_blocks.12.0.in_layers.0.weight"), None);
    }

    #[test]
    fn vae_up_blocks_are_reversed_and_attention_renamed() {
        let rules = vae_rules(&LdmLayout::sd15().vae);
        let cases = [
            (
                "decoder.up.0.block.2.nin_shortcut.weight",
                "decoder.up_blocks.3.resnets.2.conv_shortcut.weight",
            ),
            (
                "decoder.up.3.upsample.conv.weight",
                "decoder.up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "encoder.down.1.downsample.conv.bias",
                "encoder.down_blocks.1.downsamplers.0.conv.bias",
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                "encoder.mid_block.attentions.0.to_out.0.weight",
            ),
            (
                "decoder.mid.attn_1.norm.bias",
                "decoder.mid_block.attentions.0.group_norm.bias",
            ),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight"),
            ("post_quant_conv.bias", "post_quant_conv.bias"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(
                to_diffusers(&rules, ldm).as_deref(),
                Some(diffusers),
                "{ldm}"
            );
        }
        // The deepest encoder level has no downsampler; encoder levels have two resnets.
        assert_eq!(
            to_diffusers(&rules, "encoder.down.3.downsample.conv.weight"),
            None
        );
        assert_eq!(
            to_diffusers(&rules, "encoder.down.0.block.2.conv1.weight"),
            None
        );
    }

    #[test]
    fn ema_key_drops_the_dots_after_the_first_component() {
        assert_eq!(
            ema_key("model.diffusion_model.input_blocks.0.0.weight").as_deref(),
            Some("model_ema.diffusion_modelinput_blocks00weight")
        );
    }
}
