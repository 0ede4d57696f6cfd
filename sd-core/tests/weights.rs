//! WeightStore: file validation, dtype conversion, names and shapes, diffusers folders.
//!
//! Every malformed file must give a typed error whose message names the file (and the tensor,
//! where one is involved); none may panic. Fuzzing is in weights_fuzz.rs, the LDM single-file
//! layout in weights_ldm.rs.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod weights_support;

use std::path::Path;

use half::{bf16, f16};
use sd_core::Error;
use sd_core::weights::{Component, SafetensorsFile, StoredDtype, Variant, WeightStore};
use weights_support::{
    Scratch, counting, f32_tensor, file_bytes, header_json, raw_tensor, safetensors_bytes,
};

/// Open `bytes` as a file and return the error, which must be `InvalidSafetensors` naming the
/// file; its message is returned for further checks.
fn invalid_file_message(scratch: &Scratch, name: &str, bytes: &[u8]) -> String {
    let path = scratch.write(name, bytes);
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSafetensors { path: p, .. } if p == &path),
        "expected InvalidSafetensors for {}, got {err:?}",
        path.display()
    );
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "message does not name the file: {message}"
    );
    message
}

fn two_tensors() -> Vec<weights_support::RawTensor> {
    vec![
        counting("conv_in.weight", &[2, 3], 0.0),
        counting("conv_in.bias", &[2], 100.0),
    ]
}

#[test]
fn file_cut_inside_the_data_is_invalid_and_names_the_tensor_cut_off() {
    let scratch = Scratch::new("truncated-data");
    let bytes = safetensors_bytes(&two_tensors());
    let message = invalid_file_message(&scratch, "cut.safetensors", &bytes[..bytes.len() - 3]);
    // conv_in.bias is laid out last, so it is the one that runs past the end.
    assert!(message.contains("conv_in.bias"), "{message}");
    assert!(message.contains("past the end"), "{message}");
}

#[test]
fn file_cut_inside_the_header_is_invalid() {
    let scratch = Scratch::new("truncated-header");
    let bytes = safetensors_bytes(&two_tensors());
    let message = invalid_file_message(&scratch, "cut.safetensors", &bytes[..20]);
    assert!(message.contains("header length"), "{message}");
    let message = invalid_file_message(&scratch, "tiny.safetensors", &bytes[..5]);
    assert!(message.contains("too short"), "{message}");
    invalid_file_message(&scratch, "empty.safetensors", &[]);
}

#[test]
fn header_length_past_the_end_of_the_file_is_invalid() {
    let scratch = Scratch::new("header-length");
    let mut bytes = safetensors_bytes(&two_tensors());
    let lie = (bytes.len() as u64).to_le_bytes();
    bytes[..8].copy_from_slice(&lie);
    let message = invalid_file_message(&scratch, "lying-length.safetensors", &bytes);
    assert!(message.contains("runs past the end"), "{message}");

    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let message = invalid_file_message(&scratch, "huge-length.safetensors", &bytes);
    assert!(message.contains("exceeds"), "{message}");
}

#[test]
fn header_length_shorter_than_the_json_is_invalid() {
    let scratch = Scratch::new("short-length");
    let mut bytes = safetensors_bytes(&two_tensors());
    let declared = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    bytes[..8].copy_from_slice(&(declared - 4).to_le_bytes());
    let message = invalid_file_message(&scratch, "short.safetensors", &bytes);
    assert!(message.contains("JSON"), "{message}");
}

#[test]
fn header_that_is_not_json_is_invalid() {
    let scratch = Scratch::new("not-json");
    let message = invalid_file_message(
        &scratch,
        "garbage.safetensors",
        &file_bytes("this is not json", &[]),
    );
    assert!(message.contains("JSON"), "{message}");
    invalid_file_message(&scratch, "array.safetensors", &file_bytes("[1, 2]", &[]));
    let mut not_utf8 = file_bytes("{\"a\":1}", &[]);
    not_utf8[10] = 0xff;
    let message = invalid_file_message(&scratch, "not-utf8.safetensors", &not_utf8);
    assert!(message.contains("UTF-8"), "{message}");
}

#[test]
fn header_entries_that_are_not_tensor_descriptions_are_invalid_and_named() {
    let scratch = Scratch::new("bad-entry");
    let cases = [
        (
            r#"{"conv.weight": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}"#,
            "unknown-dtype",
        ),
        (
            r#"{"conv.weight": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#,
            "negative-dim",
        ),
        (
            r#"{"conv.weight": {"dtype": "F32", "shape": [1]}}"#,
            "no-offsets",
        ),
    ];
    for (header, name) in cases {
        let message = invalid_file_message(
            &scratch,
            &format!("{name}.safetensors"),
            &file_bytes(header, &[0; 4]),
        );
        assert!(message.contains("conv.weight"), "{name}: {message}");
    }
    let message = invalid_file_message(
        &scratch,
        "metadata.safetensors",
        &file_bytes(r#"{"__metadata__": {"format": 1}}"#, &[]),
    );
    assert!(message.contains("__metadata__"), "{message}");
}

/// A header claiming `offsets` for two 4-byte F32 tensors over `data_len` bytes.
fn lying_offsets_file(a: [usize; 2], b: [usize; 2], data_len: usize) -> Vec<u8> {
    let header = serde_json::json!({
        "first.weight": {"dtype": "F32", "shape": [1], "data_offsets": a},
        "second.weight": {"dtype": "F32", "shape": [1], "data_offsets": b},
    })
    .to_string();
    file_bytes(&header, &vec![0u8; data_len])
}

#[test]
fn data_offsets_that_lie_are_invalid_and_name_the_tensor() {
    let scratch = Scratch::new("offsets");
    // (case, file, tensor the message must name, words it must contain)
    let cases = [
        (
            "overlap",
            lying_offsets_file([0, 4], [2, 6], 8),
            "second.weight",
            "overlap",
        ),
        (
            "past-end",
            lying_offsets_file([0, 4], [4, 8], 6),
            "second.weight",
            "past the end",
        ),
        (
            "size-mismatch",
            lying_offsets_file([0, 4], [4, 10], 10),
            "second.weight",
            "needs 4",
        ),
        (
            "reversed",
            lying_offsets_file([0, 4], [8, 4], 8),
            "second.weight",
            "end before",
        ),
        (
            "gap",
            lying_offsets_file([0, 4], [6, 10], 10),
            "second.weight",
            "gap",
        ),
        (
            "not-from-zero",
            lying_offsets_file([2, 6], [6, 10], 10),
            "first.weight",
            "gap",
        ),
    ];
    for (case, bytes, tensor, words) in cases {
        let message = invalid_file_message(&scratch, &format!("{case}.safetensors"), &bytes);
        assert!(message.contains(tensor), "{case}: {message}");
        assert!(message.contains(words), "{case}: {message}");
    }
    let trailing = lying_offsets_file([0, 4], [4, 8], 12);
    let message = invalid_file_message(&scratch, "trailing.safetensors", &trailing);
    assert!(message.contains("cover 8 bytes"), "{message}");
    let overflow = file_bytes(
        r#"{"big": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}"#,
        &[0; 4],
    );
    let message = invalid_file_message(&scratch, "overflow.safetensors", &overflow);
    assert!(message.contains("big"), "{message}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let scratch = Scratch::new("missing-file");
    let path = scratch.path().join("nowhere.safetensors");
    let err = SafetensorsFile::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("nowhere.safetensors"));
}

/// A UNet-component store over one file holding `tensors`.
fn unet_store(scratch: &Scratch, tensors: &[weights_support::RawTensor]) -> (WeightStore, String) {
    let path = scratch.write(
        "unet/diffusion_pytorch_model.safetensors",
        &safetensors_bytes(tensors),
    );
    let store = WeightStore::open_component_files(Component::Unet, &[&path]).unwrap();
    (store, path.display().to_string())
}

fn conv_in() -> weights_support::RawTensor {
    counting("conv_in.weight", &[8, 4, 3, 3], 0.0)
}

#[test]
fn missing_tensor_names_the_tensor_and_the_files() {
    let scratch = Scratch::new("missing-tensor");
    let (store, file) = unet_store(&scratch, &[conv_in()]);
    let unet = store.unet().unwrap();
    let err = unet
        .at("down_blocks.0.resnets.0")
        .get("conv1.weight")
        .unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("down_blocks.0.resnets.0.conv1.weight"),
        "{message}"
    );
    assert!(message.contains(&file), "{message}");
    assert!(!unet.contains("conv_out.weight"));
    assert!(matches!(
        unet.info("conv_out.weight"),
        Err(Error::MissingTensor { .. })
    ));
}

#[test]
fn misshaped_tensor_names_tensor_file_and_both_shapes() {
    let scratch = Scratch::new("shape");
    let (store, file) = unet_store(&scratch, &[conv_in()]);
    let err = store
        .unet()
        .unwrap()
        .get_shaped("conv_in.weight", &[8, 9, 3, 3])
        .unwrap_err();
    match &err {
        Error::TensorShape {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "conv_in.weight");
            assert_eq!(expected, &[8, 9, 3, 3]);
            assert_eq!(found, &[8, 4, 3, 3]);
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    let message = err.to_string();
    for part in ["conv_in.weight", &file, "[8, 9, 3, 3]", "[8, 4, 3, 3]"] {
        assert!(message.contains(part), "{message} lacks {part}");
    }
}

#[test]
fn unsupported_dtype_names_tensor_and_file() {
    let scratch = Scratch::new("dtype");
    let steps = raw_tensor(
        "time_steps",
        "I64",
        &[2],
        [7i64, 8].iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let (store, file) = unet_store(&scratch, &[conv_in(), steps]);
    let unet = store.unet().unwrap();
    assert_eq!(unet.info("time_steps").unwrap().dtype, StoredDtype::I64);
    assert_eq!(unet.info("time_steps").unwrap().shape, [2]);
    let err = unet.get("time_steps").unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedDtype { dtype, .. } if dtype == "I64"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("time_steps") && message.contains(&file),
        "{message}"
    );
    assert!(matches!(
        unet.get_shaped("time_steps", &[2]),
        Err(Error::UnsupportedDtype { .. })
    ));
}

#[test]
fn f32_f16_and_bf16_are_converted_exactly() {
    // Bit patterns with known values: 1, -2, 1/3 rounded to f16, the largest finite f16, the
    // smallest subnormal f16 (2^-24), +inf; bf16 1, 3.140625, -123.5, 2^-133 (subnormal).
    let f16_bits: [u16; 6] = [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x7c00];
    let f16_values = [
        1.0,
        -2.0,
        1365.0 / 4096.0,
        65504.0,
        2f32.powi(-24),
        f32::INFINITY,
    ];
    let bf16_bits: [u16; 4] = [0x3f80, 0x4049, 0xc2f7, 0x0001];
    let bf16_values = [1.0, 3.140625, -123.5, f32::from_bits(0x0001_0000)];
    let f32_values = [0.1f32, -7.25, f32::MIN_POSITIVE, 3.0e38];
    let le = |bits: &[u16]| {
        bits.iter()
            .flat_map(|b| b.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let tensors = [
        raw_tensor("half.weight", "F16", &[2, 3], le(&f16_bits)),
        raw_tensor("brain.weight", "BF16", &[4], le(&bf16_bits)),
        f32_tensor("single.weight", &[2, 2], &f32_values),
    ];
    let scratch = Scratch::new("convert");
    // An odd header length starts the data at an odd offset: every element read is unaligned.
    let mut header = header_json(&tensors);
    if header.len().is_multiple_of(2) {
        header.push(' ');
    }
    let data: Vec<u8> = tensors.iter().flat_map(|t| t.bytes.clone()).collect();
    let path = scratch.write("mixed.safetensors", &file_bytes(&header, &data));
    let file = SafetensorsFile::open(&path).unwrap();

    let half = file.get("half.weight").unwrap();
    assert_eq!(half.shape(), &[2, 3]);
    assert_eq!(half.iter().copied().collect::<Vec<_>>(), f16_values);
    let brain = file.get("brain.weight").unwrap();
    assert_eq!(brain.iter().copied().collect::<Vec<_>>(), bf16_values);
    let single = file.get("single.weight").unwrap();
    assert_eq!(single.iter().copied().collect::<Vec<_>>(), f32_values);
    assert_eq!(file.info("half.weight").unwrap().dtype, StoredDtype::F16);

    // The half crate agrees with the hand-written constants.
    assert_eq!(f16::from_bits(0x3555).to_f32(), f16_values[2]);
    assert_eq!(bf16::from_bits(0x4049).to_f32(), bf16_values[1]);
}

#[test]
fn every_16_bit_pattern_converts_like_the_half_crate_across_chunk_boundaries() {
    // All 65536 patterns, so the tensors span several parallel decode chunks; the data starts
    // at an odd offset (a 1-byte U8 tensor goes first). The oracle is half's scalar conversion.
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let tensors = [
        raw_tensor("pad", "U8", &[1], vec![0]),
        raw_tensor("half", "F16", &[256, 256], bytes.clone()),
        raw_tensor("brain", "BF16", &[65536], bytes),
    ];
    let scratch = Scratch::new("all-bits");
    let path = scratch.write("bits.safetensors", &safetensors_bytes(&tensors));
    let file = SafetensorsFile::open(&path).unwrap();
    let half = file.get("half").unwrap();
    let brain = file.get("brain").unwrap();
    for (i, (&h, &b)) in half.iter().zip(brain.iter()).enumerate() {
        let want_h = f16::from_bits(i as u16).to_f32();
        let want_b = bf16::from_bits(i as u16).to_f32();
        assert!(
            h.to_bits() == want_h.to_bits() || (h.is_nan() && want_h.is_nan()),
            "f16 {i:#06x}"
        );
        assert!(
            b.to_bits() == want_b.to_bits() || (b.is_nan() && want_b.is_nan()),
            "bf16 {i:#06x}"
        );
    }
}

#[test]
fn nan_survives_conversion() {
    let scratch = Scratch::new("nan");
    let path = scratch.write(
        "nan.safetensors",
        &safetensors_bytes(&[raw_tensor("x", "F16", &[1], vec![0x00, 0x7e])]),
    );
    let file = SafetensorsFile::open(&path).unwrap();
    assert!(file.get("x").unwrap()[[0]].is_nan());
}

#[test]
fn scoped_views_compose_module_paths() {
    let scratch = Scratch::new("scopes");
    let tensors = [
        conv_in(),
        counting("down_blocks.0.resnets.1.conv1.weight", &[4, 4, 3, 3], 7.0),
        counting("down_blocks.0.resnets.1.conv1.bias", &[4], 3.0),
        counting("down_blocks.1.resnets.0.conv1.bias", &[4], 5.0),
    ];
    let (store, _) = unet_store(&scratch, &tensors);
    let unet = store.unet().unwrap();
    let resnet = unet.at("down_blocks").at(0).at("resnets.1");
    assert_eq!(resnet.prefix(), "down_blocks.0.resnets.1");
    assert_eq!(
        resnet.full_name("conv1.bias"),
        "down_blocks.0.resnets.1.conv1.bias"
    );
    assert_eq!(resnet.names(), ["conv1.bias", "conv1.weight"]);
    let bias = resnet.get_shaped("conv1.bias", &[4]).unwrap();
    assert_eq!(
        bias.iter().copied().collect::<Vec<_>>(),
        [3.0, 4.0, 5.0, 6.0]
    );
    assert_eq!(resnet.info("conv1.weight").unwrap().shape, [4, 4, 3, 3]);
    assert_eq!(unet.at("down_blocks.1").names(), ["resnets.0.conv1.bias"]);
    assert_eq!(unet.names().len(), 4);
    assert_eq!(store.variant(), Some(Variant::Standard));
}

#[test]
fn linear_and_1x1_conv_shapes_are_interchangeable() {
    let scratch = Scratch::new("reshape");
    let tensors = [
        conv_in(),
        counting("mid_block.attentions.0.proj_in.weight", &[3, 2, 1, 1], 0.0),
        counting("mid_block.attentions.0.proj_out.weight", &[3, 2], 0.0),
    ];
    let (store, _) = unet_store(&scratch, &tensors);
    let attn = store.unet().unwrap().at("mid_block.attentions.0");
    let as_linear = attn.get_shaped("proj_in.weight", &[3, 2]).unwrap();
    assert_eq!(as_linear.shape(), &[3, 2]);
    assert_eq!(as_linear[[2, 1]], 5.0);
    let as_conv = attn.get_shaped("proj_out.weight", &[3, 2, 1, 1]).unwrap();
    assert_eq!(as_conv[[2, 1, 0, 0]], 5.0);
    // Same element count is not enough: [2, 3] is a different matrix.
    assert!(matches!(
        attn.get_shaped("proj_in.weight", &[2, 3]),
        Err(Error::TensorShape { .. })
    ));
    assert!(matches!(
        attn.get_shaped("proj_in.weight", &[3, 2, 1]),
        Err(Error::TensorShape { .. })
    ));
}

#[test]
fn several_files_form_one_component_and_duplicates_are_refused() {
    let scratch = Scratch::new("several");
    let a = scratch.write(
        "a.safetensors",
        &safetensors_bytes(&[conv_in(), counting("conv_out.bias", &[4], 1.0)]),
    );
    let b = scratch.write(
        "b.safetensors",
        &safetensors_bytes(&[counting("conv_out.weight", &[4, 8, 3, 3], 2.0)]),
    );
    let store = WeightStore::open_component_files(Component::Unet, &[&a, &b]).unwrap();
    let unet = store.unet().unwrap();
    assert_eq!(unet.get("conv_out.weight").unwrap()[[0, 0, 0, 0]], 2.0);
    assert_eq!(unet.get("conv_out.bias").unwrap()[[0]], 1.0);
    let err = unet.get("nothing").unwrap_err().to_string();
    assert!(
        err.contains("a.safetensors") && err.contains("b.safetensors"),
        "{err}"
    );

    let c = scratch.write(
        "c.safetensors",
        &safetensors_bytes(&[counting("conv_out.bias", &[4], 9.0)]),
    );
    let err = WeightStore::open_component_files(Component::Unet, &[&a, &c]).unwrap_err();
    assert!(matches!(err, Error::InvalidSafetensors { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("conv_out.bias") && message.contains("c.safetensors"),
        "{message}"
    );
}

#[test]
fn store_without_a_component_says_so() {
    let scratch = Scratch::new("no-vae");
    let (store, _) = unet_store(&scratch, &[conv_in()]);
    let err = store.vae().unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel { .. }), "{err:?}");
    assert!(err.to_string().contains("vae"));
    assert!(!store.has_component(Component::Vae));

    let none: [&Path; 0] = [];
    let err = WeightStore::open_component_files(Component::Vae, &none).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

// ---- diffusers folders ----

const MODEL_INDEX: &str = r#"{
  "_class_name": "StableDiffusionPipeline",
  "text_encoder": ["transformers", "CLIPTextModel"],
  "unet": ["diffusers", "UNet2DConditionModel"],
  "vae": ["diffusers", "AutoencoderKL"],
  "safety_checker": [null, null]
}"#;

fn write_folder(scratch: &Scratch, model_index: &str) {
    scratch.write("pipe/model_index.json", model_index.as_bytes());
    scratch.write(
        "pipe/unet/diffusion_pytorch_model.safetensors",
        &safetensors_bytes(&[conv_in()]),
    );
    // transformers 5 spelling: no text_model. prefix.
    scratch.write(
        "pipe/text_encoder/model.safetensors",
        &safetensors_bytes(&[counting("embeddings.token_embedding.weight", &[10, 4], 0.0)]),
    );
    // pre-0.14 diffusers VAE attention names, sharded in two files.
    let shard1 = [counting(
        "decoder.mid_block.attentions.0.query.weight",
        &[4, 4],
        1.0,
    )];
    let shard2 = [counting(
        "decoder.mid_block.attentions.0.proj_attn.bias",
        &[4],
        2.0,
    )];
    scratch.write(
        "pipe/vae/diffusion_pytorch_model-00001-of-00002.safetensors",
        &safetensors_bytes(&shard1),
    );
    scratch.write(
        "pipe/vae/diffusion_pytorch_model-00002-of-00002.safetensors",
        &safetensors_bytes(&shard2),
    );
    scratch.write(
        "pipe/vae/diffusion_pytorch_model.safetensors.index.json",
        br#"{"metadata": {}, "weight_map": {
            "decoder.mid_block.attentions.0.query.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "decoder.mid_block.attentions.0.proj_attn.bias": "diffusion_pytorch_model-00002-of-00002.safetensors"}}"#,
    );
}

#[test]
fn diffusers_folder_accepts_both_clip_spellings_legacy_vae_names_and_shards() {
    let scratch = Scratch::new("folder");
    write_folder(&scratch, MODEL_INDEX);
    let store = WeightStore::open(scratch.path().join("pipe")).unwrap();
    assert_eq!(store.variant(), Some(Variant::Standard));
    assert_eq!(store.files().count(), 4);

    let text = store.text_encoder().unwrap();
    let with_prefix = text
        .get("text_model.embeddings.token_embedding.weight")
        .unwrap();
    let without_prefix = text.get("embeddings.token_embedding.weight").unwrap();
    assert_eq!(with_prefix, without_prefix);
    assert_eq!(with_prefix[[9, 3]], 39.0);
    assert_eq!(
        text.at("text_model").at("embeddings").names(),
        ["token_embedding.weight"]
    );

    let attn = store.vae().unwrap().at("decoder.mid_block.attentions.0");
    assert_eq!(attn.get("to_q.weight").unwrap()[[0, 0]], 1.0);
    assert_eq!(attn.get("to_out.0.bias").unwrap()[[0]], 2.0);
    // Asking in the legacy spelling works too.
    assert_eq!(attn.get("query.weight").unwrap()[[0, 0]], 1.0);
    // Errors show the key as stored.
    let message = attn
        .get_shaped("to_q.weight", &[4])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("to_q.weight") && message.contains("query.weight"),
        "{message}"
    );
}

#[test]
fn diffusers_folder_without_weights_or_index_is_an_error_naming_the_place() {
    let scratch = Scratch::new("folder-missing");
    let err = WeightStore::open_diffusers_folder(scratch.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("model_index.json")),
        "{err:?}"
    );

    write_folder(&scratch, MODEL_INDEX);
    std::fs::remove_file(
        scratch
            .path()
            .join("pipe/unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let err = WeightStore::open(scratch.path().join("pipe")).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("unet")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("diffusion_pytorch_model.safetensors")
    );
}

#[test]
fn diffusers_folder_reads_fp16_variant_files() {
    let scratch = Scratch::new("folder-fp16");
    write_folder(&scratch, MODEL_INDEX);
    let unet_dir = scratch.path().join("pipe/unet");
    std::fs::rename(
        unet_dir.join("diffusion_pytorch_model.safetensors"),
        unet_dir.join("diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    let store = WeightStore::open(scratch.path().join("pipe")).unwrap();
    assert!(store.unet().unwrap().contains("conv_in.weight"));
}

#[test]
fn shard_index_may_not_point_outside_its_folder() {
    let scratch = Scratch::new("folder-escape");
    write_folder(&scratch, MODEL_INDEX);
    scratch.write(
        "pipe/vae/diffusion_pytorch_model.safetensors.index.json",
        br#"{"weight_map": {"x": "../unet/diffusion_pytorch_model.safetensors"}}"#,
    );
    let err = WeightStore::open(scratch.path().join("pipe")).unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "weight_map"),
        "{err:?}"
    );
}

#[test]
fn corrupt_file_in_a_folder_is_named() {
    let scratch = Scratch::new("folder-corrupt");
    write_folder(&scratch, MODEL_INDEX);
    let unet = scratch.write(
        "pipe/unet/diffusion_pytorch_model.safetensors",
        b"\x02\0\0\0\0\0\0\0{}x",
    );
    let err = WeightStore::open(scratch.path().join("pipe")).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSafetensors { path, .. } if path == &unet),
        "{err:?}"
    );
}

#[test]
fn sdxl_pipelines_are_refused() {
    let scratch = Scratch::new("folder-sdxl");
    let index = MODEL_INDEX.replace(
        "\"vae\"",
        "\"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"], \"vae\"",
    );
    write_folder(&scratch, &index);
    let err = WeightStore::open(scratch.path().join("pipe")).unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("SDXL") && message.contains("model_index.json"),
        "{message}"
    );

    let index = MODEL_INDEX.replace("StableDiffusionPipeline", "StableDiffusionXLPipeline");
    write_folder(&scratch, &index);
    assert!(matches!(
        WeightStore::open(scratch.path().join("pipe")),
        Err(Error::UnsupportedModel { .. })
    ));
}

#[test]
fn sd2_and_sdxl_unets_are_refused_by_their_weights() {
    let scratch = Scratch::new("foreign-unet");
    let cases = [
        (
            counting(
                "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                &[2, 1024],
                0.0,
            ),
            "SD 2.x",
        ),
        (
            counting("add_embedding.linear_1.weight", &[2, 2], 0.0),
            "SDXL",
        ),
    ];
    for (tensor, family) in cases {
        let path = scratch.write("unet.safetensors", &safetensors_bytes(&[conv_in(), tensor]));
        let err = WeightStore::open_component_files(Component::Unet, &[&path]).unwrap_err();
        assert!(matches!(err, Error::UnsupportedModel { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(family) && message.contains("unet.safetensors"),
            "{message}"
        );
    }
}

#[test]
fn inpainting_unet_is_detected_and_odd_input_channels_refused() {
    let scratch = Scratch::new("variant");
    let nine = scratch.write(
        "nine.safetensors",
        &safetensors_bytes(&[counting("conv_in.weight", &[8, 9, 3, 3], 0.0)]),
    );
    let store = WeightStore::open_component_files(Component::Unet, &[&nine]).unwrap();
    assert_eq!(store.variant(), Some(Variant::Inpainting));
    assert_eq!(Variant::Inpainting.unet_in_channels(), 9);

    // A partial UNet without conv_in opens; the variant is simply unknown.
    let partial = scratch.write(
        "partial.safetensors",
        &safetensors_bytes(&[counting("conv_out.bias", &[4], 0.0)]),
    );
    let store = WeightStore::open_component_files(Component::Unet, &[&partial]).unwrap();
    assert_eq!(store.variant(), None);

    let eight = scratch.write(
        "eight.safetensors",
        &safetensors_bytes(&[counting("conv_in.weight", &[8, 8, 3, 3], 0.0)]),
    );
    let err = WeightStore::open_component_files(Component::Unet, &[&eight]).unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel { .. }), "{err:?}");
    assert!(err.to_string().contains("8 input channels"), "{err}");
}

#[test]
fn metadata_is_exposed() {
    let scratch = Scratch::new("metadata");
    let tensors = [counting("x", &[1], 0.0)];
    let header = header_json(&tensors).replacen('{', r#"{"__metadata__": {"format": "pt"}, "#, 1);
    let path = scratch.write("meta.safetensors", &file_bytes(&header, &tensors[0].bytes));
    let file = SafetensorsFile::open(&path).unwrap();
    assert_eq!(
        file.metadata().get("format").map(String::as_str),
        Some("pt")
    );
    assert_eq!(file.names().collect::<Vec<_>>(), ["x"]);
    assert_eq!(file.path(), Path::new(&path));
}
