//! LDM single files: the key mapping to diffusers names, EMA weights, variants and refusals.
//!
//! Expected names come from two places outside this crate: weights_data/sd15_ldm_names.txt
//! (every SD 1.5 pair, checked against diffusers' own converter by tools/ldm_convert.py) and the
//! fixtures' LDM twins of tiny diffusers pipelines (written by tools/ldm_convert.py, which
//! diffusers' `from_single_file` loads back to the same tensors).

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod weights_support;

use std::path::Path;

use sd_core::Error;
use sd_core::weights::{
    Component, LdmLayout, UnetLayout, UnetWeights, VaeLayout, Variant, WeightStore, ldm,
};
use weights_support::{RawTensor, Scratch, counting, safetensors_bytes};

/// A tiny two-level layout: one resnet per level, attention at the top level only.
fn two_level_layout() -> LdmLayout {
    LdmLayout {
        unet: UnetLayout {
            layers_per_level: vec![1, 1],
            down_attention: vec![true, false],
            up_attention: vec![false, true],
        },
        vae: VaeLayout {
            levels: 2,
            layers_per_block: 1,
        },
    }
}

/// `(LDM key, diffusers name, shape)`; tensor `i` holds `i * 1000, i * 1000 + 1, …`.
const TWO_LEVEL_CASES: &[(&str, &str, &[usize])] = &[
    (
        "model.diffusion_model.input_blocks.0.0.weight",
        "conv_in.weight",
        &[8, 4, 3, 3],
    ),
    (
        "model.diffusion_model.time_embed.0.weight",
        "time_embedding.linear_1.weight",
        &[4, 2],
    ),
    (
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
        "down_blocks.0.resnets.0.norm1.weight",
        &[2],
    ),
    (
        "model.diffusion_model.input_blocks.1.0.emb_layers.1.bias",
        "down_blocks.0.resnets.0.time_emb_proj.bias",
        &[2],
    ),
    (
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "down_blocks.0.attentions.0.proj_in.weight",
        &[2, 2, 1, 1],
    ),
    (
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
        &[4, 2],
    ),
    (
        "model.diffusion_model.input_blocks.2.0.op.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        &[2, 2, 3, 3],
    ),
    (
        "model.diffusion_model.input_blocks.3.0.skip_connection.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight",
        &[3, 2, 1, 1],
    ),
    (
        "model.diffusion_model.middle_block.0.out_layers.3.weight",
        "mid_block.resnets.0.conv2.weight",
        &[3, 3, 3, 3],
    ),
    (
        "model.diffusion_model.middle_block.1.norm.bias",
        "mid_block.attentions.0.norm.bias",
        &[3],
    ),
    (
        "model.diffusion_model.output_blocks.1.0.in_layers.2.bias",
        "up_blocks.0.resnets.1.conv1.bias",
        &[3],
    ),
    (
        "model.diffusion_model.output_blocks.1.1.conv.weight",
        "up_blocks.0.upsamplers.0.conv.weight",
        &[3, 3, 3, 3],
    ),
    (
        "model.diffusion_model.output_blocks.3.1.proj_out.bias",
        "up_blocks.1.attentions.1.proj_out.bias",
        &[2],
    ),
    (
        "model.diffusion_model.out.0.weight",
        "conv_norm_out.weight",
        &[2],
    ),
    ("model.diffusion_model.out.2.bias", "conv_out.bias", &[4]),
    (
        "first_stage_model.encoder.down.0.block.0.nin_shortcut.weight",
        "encoder.down_blocks.0.resnets.0.conv_shortcut.weight",
        &[3, 2, 1, 1],
    ),
    (
        "first_stage_model.encoder.down.0.downsample.conv.bias",
        "encoder.down_blocks.0.downsamplers.0.conv.bias",
        &[2],
    ),
    (
        "first_stage_model.decoder.up.0.block.1.norm2.weight",
        "decoder.up_blocks.1.resnets.1.norm2.weight",
        &[2],
    ),
    (
        "first_stage_model.decoder.up.1.upsample.conv.bias",
        "decoder.up_blocks.0.upsamplers.0.conv.bias",
        &[3],
    ),
    (
        "first_stage_model.decoder.mid.attn_1.norm.weight",
        "decoder.mid_block.attentions.0.group_norm.weight",
        &[3],
    ),
    (
        "first_stage_model.decoder.norm_out.bias",
        "decoder.conv_norm_out.bias",
        &[2],
    ),
    (
        "first_stage_model.post_quant_conv.weight",
        "post_quant_conv.weight",
        &[4, 4, 1, 1],
    ),
    (
        "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
        "text_model.encoder.layers.0.mlp.fc1.weight",
        &[5, 2],
    ),
];

fn case_tensors() -> Vec<RawTensor> {
    TWO_LEVEL_CASES
        .iter()
        .enumerate()
        .map(|(i, (key, _, shape))| counting(key, shape, i as f32 * 1000.0))
        .collect()
}

fn component_of(diffusers_name: &str, ldm_key: &str) -> Component {
    if ldm_key.starts_with(ldm::UNET_PREFIX) {
        Component::Unet
    } else if ldm_key.starts_with(ldm::VAE_PREFIX) {
        Component::Vae
    } else {
        assert!(diffusers_name.starts_with("text_model."));
        Component::TextEncoder
    }
}

#[test]
fn ldm_keys_of_a_two_level_model_are_found_by_diffusers_names() {
    let scratch = Scratch::new("ldm-two-level");
    let mut tensors = case_tensors();
    // Training state and blocks this layout doesn't have.
    tensors.push(counting("betas", &[3], 0.0));
    tensors.push(counting("model_ema.decay", &[], 0.0));
    tensors.push(counting(
        "model.diffusion_model.input_blocks.4.0.in_layers.0.weight",
        &[2],
        0.0,
    ));
    tensors.push(counting(
        "model.diffusion_model.label_embedding.weight",
        &[2],
        0.0,
    ));
    let path = scratch.write("two.safetensors", &safetensors_bytes(&tensors));
    let store = WeightStore::open_single_file(&path, &two_level_layout()).unwrap();
    assert_eq!(store.variant(), Some(Variant::Standard));

    for (i, (key, name, shape)) in TWO_LEVEL_CASES.iter().enumerate() {
        let weights = store.component(component_of(name, key)).unwrap();
        let tensor = weights.get_shaped(name, shape).unwrap();
        let first = *tensor.iter().next().unwrap();
        assert_eq!(first, i as f32 * 1000.0, "{name} should be {key}");
    }
    assert_eq!(
        store.unmapped_keys(),
        [
            "model.diffusion_model.input_blocks.4.0.in_layers.0.weight",
            "model.diffusion_model.label_embedding.weight",
        ]
    );
    let unet_names = store.unet().unwrap().names();
    assert_eq!(unet_names.len(), 15);
    assert!(
        !unet_names
            .iter()
            .any(|n| n.contains("betas") || n.contains("ema"))
    );
}

#[test]
fn vae_attention_convs_are_given_as_linears() {
    let scratch = Scratch::new("ldm-vae-attention");
    let mut tensors = case_tensors();
    tensors.push(counting(
        "first_stage_model.encoder.mid.attn_1.q.weight",
        &[3, 3, 1, 1],
        0.5,
    ));
    tensors.push(counting(
        "first_stage_model.encoder.mid.attn_1.proj_out.weight",
        &[3, 3, 1, 1],
        0.25,
    ));
    let path = scratch.write("vae.safetensors", &safetensors_bytes(&tensors));
    let store = WeightStore::open_single_file(&path, &two_level_layout()).unwrap();
    let attn = store.vae().unwrap().at("encoder.mid_block.attentions.0");
    let q = attn.get_shaped("to_q.weight", &[3, 3]).unwrap();
    assert_eq!(q[[1, 2]], 5.5);
    let out = attn.get_shaped("to_out.0.weight", &[3, 3]).unwrap();
    assert_eq!(out[[2, 0]], 6.25);
    let err = attn
        .get_shaped("to_q.weight", &[3, 4])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.mid_block.attentions.0.to_q.weight")
            && err.contains("first_stage_model.encoder.mid.attn_1.q.weight")
            && err.contains("vae.safetensors"),
        "{err}"
    );
}

#[test]
fn clip_keys_with_or_without_text_model_are_accepted() {
    let scratch = Scratch::new("ldm-clip");
    let unet = counting(
        "model.diffusion_model.input_blocks.0.0.weight",
        &[8, 4, 3, 3],
        0.0,
    );
    for key in [
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "cond_stage_model.transformer.final_layer_norm.weight",
    ] {
        let path = scratch.write(
            "clip.safetensors",
            &safetensors_bytes(&[unet.clone(), counting(key, &[4], 2.0)]),
        );
        let store = WeightStore::open_single_file(&path, &LdmLayout::sd15()).unwrap();
        let text = store.text_encoder().unwrap();
        for name in [
            "text_model.final_layer_norm.weight",
            "final_layer_norm.weight",
        ] {
            assert_eq!(text.get(name).unwrap()[[3]], 5.0, "{key} as {name}");
        }
    }
}

/// A full checkpoint holds the trained weights and their EMA copies: the trained ones by
/// default (diffusers' `extract_ema=False`, A1111's `use_ema: False`), the copies on request.
#[test]
fn full_checkpoints_give_the_trained_weights_unless_the_ema_copies_are_asked_for() {
    let scratch = Scratch::new("ldm-ema");
    let conv_in = "model.diffusion_model.input_blocks.0.0.weight";
    let conv_out = "model.diffusion_model.out.2.bias";
    let trained = [
        counting(conv_in, &[8, 4, 3, 3], 0.0),
        counting(conv_out, &[4], 10.0),
    ];
    let ema = [
        counting(&ldm::ema_key(conv_in).unwrap(), &[8, 4, 3, 3], 0.5),
        counting(&ldm::ema_key(conv_out).unwrap(), &[4], 20.0),
        counting("model_ema.num_updates", &[], 0.0),
    ];
    let full = [&trained[..], &ema[..]].concat();
    let path = scratch.write("full.safetensors", &safetensors_bytes(&full));
    let layout = LdmLayout::sd15();

    let store = WeightStore::open_single_file(&path, &layout).unwrap();
    assert_eq!(store.unet_weights(), Some(UnetWeights::NonEma));
    let unet = store.unet().unwrap();
    assert_eq!(unet.get("conv_in.weight").unwrap()[[0, 0, 0, 1]], 1.0);
    assert_eq!(unet.get("conv_out.bias").unwrap()[[0]], 10.0);

    let store = WeightStore::open_single_file_with(&path, &layout, UnetWeights::Ema).unwrap();
    assert_eq!(store.unet_weights(), Some(UnetWeights::Ema));
    let unet = store.unet().unwrap();
    assert_eq!(unet.get("conv_in.weight").unwrap()[[0, 0, 0, 1]], 1.5);
    assert_eq!(unet.get("conv_out.bias").unwrap()[[0]], 20.0);
    let err = unet
        .get_shaped("conv_in.weight", &[1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model_ema.diffusion_modelinput_blocks00weight"),
        "{err}"
    );

    // An EMA set missing a tensor is refused rather than mixed with the trained set.
    let partial = [&trained[..], &ema[..1]].concat();
    let path = scratch.write("partial.safetensors", &safetensors_bytes(&partial));
    let err = WeightStore::open_single_file_with(&path, &layout, UnetWeights::Ema)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(conv_out) && err.contains("no EMA copy"),
        "{err}"
    );

    // A file with one set reports none.
    let pruned = scratch.write("pruned.safetensors", &safetensors_bytes(&trained));
    let store = WeightStore::open_single_file(&pruned, &layout).unwrap();
    assert_eq!(store.unet_weights(), None);
}

#[test]
fn inpainting_single_file_is_detected() {
    let scratch = Scratch::new("ldm-inpaint");
    let path = scratch.write(
        "inpaint.safetensors",
        &safetensors_bytes(&[counting(
            "model.diffusion_model.input_blocks.0.0.weight",
            &[8, 9, 3, 3],
            0.0,
        )]),
    );
    let store = WeightStore::open_single_file(&path, &LdmLayout::sd15()).unwrap();
    assert_eq!(store.variant(), Some(Variant::Inpainting));
}

#[test]
fn sd2_and_sdxl_single_files_are_refused_with_the_reason() {
    let scratch = Scratch::new("ldm-foreign");
    let conv_in = counting(
        "model.diffusion_model.input_blocks.0.0.weight",
        &[8, 4, 3, 3],
        0.0,
    );
    let cases = [
        (
            "cond_stage_model.model.token_embedding.weight",
            vec![4, 2],
            "SD 2.x",
        ),
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            vec![2, 1024],
            "SD 2.x",
        ),
        (
            "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
            vec![2, 2],
            "SDXL",
        ),
        (
            "model.diffusion_model.label_emb.0.0.weight",
            vec![2, 2],
            "SDXL",
        ),
    ];
    for (key, shape, family) in cases {
        let path = scratch.write(
            "foreign.safetensors",
            &safetensors_bytes(&[conv_in.clone(), counting(key, &shape, 0.0)]),
        );
        let err = WeightStore::open_single_file(&path, &LdmLayout::sd15()).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedModel { .. }),
            "{key}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(family) && message.contains("foreign.safetensors"),
            "{message}"
        );
    }
}

#[test]
fn single_file_without_a_unet_is_refused() {
    let scratch = Scratch::new("ldm-no-unet");
    let path = scratch.write(
        "vae-only.safetensors",
        &safetensors_bytes(&[counting("encoder.conv_in.weight", &[2, 3, 3, 3], 0.0)]),
    );
    let err = WeightStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel { .. }), "{err:?}");
    assert!(err.to_string().contains("model.diffusion_model"), "{err}");
}

#[test]
fn layouts_are_read_from_diffusers_configs() {
    let scratch = Scratch::new("ldm-config");
    let unet = scratch.write(
        "unet/config.json",
        br#"{"block_out_channels": [32, 64, 64], "layers_per_block": [1, 2, 2],
             "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}"#,
    );
    scratch.write(
        "vae/config.json",
        br#"{"block_out_channels": [32, 64], "layers_per_block": 2}"#,
    );
    let layout = LdmLayout::from_diffusers_folder(scratch.path()).unwrap();
    assert_eq!(layout.unet.layers_per_level, [1, 2, 2]);
    assert_eq!(layout.unet.down_attention, [true, true, false]);
    assert_eq!(layout.unet.up_attention, [false, true, true]);
    assert_eq!(
        layout.vae,
        VaeLayout {
            levels: 2,
            layers_per_block: 2
        }
    );

    std::fs::write(&unet, br#"{"block_out_channels": [32, 64], "layers_per_block": 2, "down_block_types": ["DownBlock2D"]}"#).unwrap();
    let err = UnetLayout::from_config_file(&unet).unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "down_block_types"),
        "{err:?}"
    );
    assert!(err.to_string().contains("config.json"));
}

fn sd15_name_pairs() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/weights_data/sd15_ldm_names.txt"),
    )
    .unwrap()
}

fn parse_pairs(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once(' ').unwrap())
        .collect()
}

#[test]
fn every_sd15_name_pair_checked_by_diffusers_maps() {
    // One stand-in tensor per SD 1.5 UNet/VAE parameter, holding its line number.
    let text = sd15_name_pairs();
    let pairs = parse_pairs(&text);
    assert_eq!(
        pairs.len(),
        686 + 248,
        "SD 1.5 has 686 UNet and 248 VAE parameters"
    );
    // conv_in keeps its input-channel dimension: variant detection reads it.
    let tensors: Vec<RawTensor> = pairs
        .iter()
        .enumerate()
        .map(|(i, (key, name))| {
            let shape: &[usize] = if *name == "conv_in.weight" {
                &[1, 4]
            } else {
                &[1]
            };
            counting(key, shape, i as f32)
        })
        .collect();
    let scratch = Scratch::new("ldm-sd15");
    let path = scratch.write("sd15-stand-in.safetensors", &safetensors_bytes(&tensors));
    let store = WeightStore::open_single_file(&path, &LdmLayout::sd15()).unwrap();
    assert!(
        store.unmapped_keys().is_empty(),
        "{:?}",
        store.unmapped_keys()
    );
    for (i, (key, name)) in pairs.iter().enumerate() {
        let weights = store.component(component_of(name, key)).unwrap();
        let first = *weights.get(name).unwrap().iter().next().unwrap();
        assert_eq!(first, i as f32, "{name} should be {key}");
    }
    let unet_names = store.unet().unwrap().names().len();
    assert_eq!(unet_names, 686);
}

#[test]
fn sd15_layout_is_inferred_from_its_keys() {
    let text = sd15_name_pairs();
    let keys: Vec<&str> = parse_pairs(&text).into_iter().map(|(k, _)| k).collect();
    let layout = LdmLayout::infer(Path::new("sd15"), &keys).unwrap();
    assert_eq!(layout, LdmLayout::sd15());
}

#[test]
fn irregular_unet_blocks_are_refused_when_inferring() {
    let scratch = Scratch::new("ldm-irregular");
    let block = |k: &str| counting(&format!("model.diffusion_model.{k}"), &[8, 4, 3, 3], 0.0);
    let cases = [
        (
            vec!["input_blocks.0.0.weight"],
            "no input_blocks or output_blocks",
        ),
        (
            vec![
                "input_blocks.0.0.weight",
                "input_blocks.2.0.in_layers.0.weight",
                "output_blocks.0.0.in_layers.0.weight",
            ],
            "gaps",
        ),
        (
            vec![
                "input_blocks.0.0.weight",
                "input_blocks.1.0.in_layers.0.weight",
                "output_blocks.0.0.in_layers.0.weight",
            ],
            "too few output blocks",
        ),
    ];
    for (keys, reason) in cases {
        let tensors: Vec<RawTensor> = keys.iter().map(|k| block(k)).collect();
        let path = scratch.write("odd.safetensors", &safetensors_bytes(&tensors));
        let err = WeightStore::open(&path).unwrap_err();
        assert!(matches!(err, Error::UnsupportedModel { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(reason) && message.contains("odd.safetensors"),
            "{message}"
        );
    }
}

// ---- fixtures: tiny pipelines and the LDM twin tools/ldm_convert.py wrote ----

use sd_testkit::fixtures;

#[test]
fn ldm_single_file_loads_same_tensors_as_diffusers_folder() {
    let folder = fixtures().join("tiny-sd");
    let diffusers = WeightStore::open(&folder).unwrap();
    let layout = LdmLayout::from_diffusers_folder(&folder).unwrap();
    let single =
        WeightStore::open_single_file(fixtures().join("ldm/tiny-sd.safetensors"), &layout).unwrap();
    assert!(
        single.unmapped_keys().is_empty(),
        "{:?}",
        single.unmapped_keys()
    );
    assert_eq!(single.variant(), Some(Variant::Standard));
    assert_eq!(diffusers.variant(), Some(Variant::Standard));

    let mut compared = 0;
    for component in Component::ALL {
        let want = diffusers.component(component).unwrap();
        let got = single.component(component).unwrap();
        assert_eq!(want.names(), got.names(), "{component} names differ");
        for name in want.names() {
            let expected = want.get(&name).unwrap();
            // Same shape as the folder's, even where LDM stores a 1x1 conv for a linear.
            let actual = got.get_shaped(&name, expected.shape()).unwrap();
            assert_eq!(actual, expected, "{component} {name}");
            compared += 1;
        }
    }
    // tiny-sd: 304 UNet, 124 VAE and 84 text-encoder tensors.
    assert_eq!(compared, 304 + 124 + 84);
}

#[test]
fn fixture_single_file_layout_is_inferred_like_its_configs_say() {
    let folder = fixtures().join("tiny-sd");
    let single = fixtures().join("ldm/tiny-sd.safetensors");
    let from_configs = LdmLayout::from_diffusers_folder(&folder).unwrap();
    let file = sd_core::weights::SafetensorsFile::open(&single).unwrap();
    let keys: Vec<&str> = file.names().collect();
    assert_eq!(LdmLayout::infer(&single, &keys).unwrap(), from_configs);
    // tiny-sd attends only at its deeper level, unlike SD 1.5.
    assert_eq!(from_configs.unet.down_attention, [false, true]);

    let opened = WeightStore::open(&single).unwrap();
    let explicit = WeightStore::open_single_file(&single, &from_configs).unwrap();
    for component in Component::ALL {
        assert_eq!(
            opened.component(component).unwrap().names(),
            explicit.component(component).unwrap().names()
        );
    }
}

#[test]
fn inpainting_fixture_unet_is_detected() {
    let unet = fixtures().join("tiny-sd-inpaint/unet/diffusion_pytorch_model.safetensors");
    let store = WeightStore::open_component_files(Component::Unet, &[unet]).unwrap();
    assert_eq!(store.variant(), Some(Variant::Inpainting));
    let conv_in = store
        .unet()
        .unwrap()
        .info("conv_in.weight")
        .unwrap()
        .clone();
    assert_eq!(conv_in.shape[1], 9);
    assert_eq!(conv_in.dtype, sd_core::weights::StoredDtype::F16);
}
