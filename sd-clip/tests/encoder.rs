//! `ClipTextEncoder` on the tiny fixture: chunk concatenation, padding, emphasis, modes.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use ndarray::{Axis, s};
use sd_clip::{ClipTextEncoder, PromptMode};
use sd_core::cpu::CpuBackend;
use sd_core::{Backend, Error, HostTensor, TextEncoder};

/// Hidden states of the same chunk computed twice must agree to float rounding: the model is
/// deterministic, but batch size can change the summation order of the products.
const SAME_CHUNK_TOLERANCE: f32 = 1e-5;

fn encoder(b: &CpuBackend) -> ClipTextEncoder<CpuBackend> {
    let dir = sd_testkit::pipeline("tiny-sd");
    ClipTextEncoder::load(b, dir).unwrap()
}

fn encode(b: &CpuBackend, encoder: &ClipTextEncoder<CpuBackend>, prompts: &[&str]) -> HostTensor {
    b.download(&encoder.encode_prompts(b, prompts).unwrap())
        .unwrap()
}

fn assert_close(a: &HostTensor, b: &HostTensor, tolerance: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let err = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(err <= tolerance, "{what}: max abs difference {err}");
}

#[test]
fn weight_one_encodes_the_same_as_no_syntax() {
    let b = CpuBackend::new();
    let encoder = encoder(&b);
    assert_eq!(
        encode(&b, &encoder, &["(cat:1.0)"]),
        encode(&b, &encoder, &["cat"])
    );
}

#[test]
fn a_150_token_prompt_is_two_chunks_each_encoded_alone() {
    let b = CpuBackend::new();
    let encoder = encoder(&b);
    let long = "cat ".repeat(150);
    let cond = encode(&b, &encoder, &[&long]);
    assert_eq!(cond.shape(), &[1, 154, 32]);
    // Each chunk is start + 75 cats + end: the same as the plain encoding of 75 cats.
    let one_chunk = encode(&b, &encoder, &[&"cat ".repeat(75)]);
    assert_close(
        &cond.slice(s![.., ..77, ..]).to_owned().into_dyn(),
        &one_chunk,
        0.0,
        "first chunk",
    );
    assert_close(
        &cond.slice(s![.., 77.., ..]).to_owned().into_dyn(),
        &one_chunk,
        0.0,
        "second chunk",
    );
}

#[test]
fn shorter_prompts_are_padded_with_empty_chunks() {
    let b = CpuBackend::new();
    let encoder = encoder(&b);
    let long = "a red fox ".repeat(40);
    let cond = encode(&b, &encoder, &["", &long]);
    assert_eq!(cond.shape(), &[2, 154, 32]);
    let empty = encode(&b, &encoder, &[""]);
    let negative = cond.index_axis(Axis(0), 0);
    for chunk in [0, 1] {
        let part = negative.slice(s![chunk * 77..(chunk + 1) * 77, ..]);
        assert_close(
            &part.to_owned().insert_axis(Axis(0)).into_dyn(),
            &empty,
            SAME_CHUNK_TOLERANCE,
            "negative prompt chunk",
        );
    }
}

#[test]
fn break_encodes_each_part_as_its_own_chunk() {
    let b = CpuBackend::new();
    let encoder = encoder(&b);
    let cond = encode(&b, &encoder, &["a cat BREAK a dog"]);
    assert_eq!(cond.shape(), &[1, 154, 32]);
    let cat = encode(&b, &encoder, &["a cat"]);
    let dog = encode(&b, &encoder, &["a dog"]);
    assert_close(
        &cond.slice(s![.., ..77, ..]).to_owned().into_dyn(),
        &cat,
        0.0,
        "a cat",
    );
    assert_close(
        &cond.slice(s![.., 77.., ..]).to_owned().into_dyn(),
        &dog,
        0.0,
        "a dog",
    );
}

#[test]
fn emphasis_scales_each_token_and_restores_the_mean() {
    let b = CpuBackend::new();
    let encoder = encoder(&b);
    // Same ids as "a red ball": only the weights differ.
    let weighted = encode(&b, &encoder, &["a (red:1.5) [ball]"]);
    let plain = encode(&b, &encoder, &["a red ball"]);
    let weights = &encoder.chunks("a (red:1.5) [ball]").unwrap()[0].weights;
    assert_eq!(weights[..4], [1.0, 1.0, 1.5, (1.0 / 1.1f64) as f32]);

    let mean = |t: &HostTensor| t.iter().map(|&v| f64::from(v)).sum::<f64>() / t.len() as f64;
    assert!(
        (mean(&weighted) - mean(&plain)).abs() < 1e-6,
        "mean is restored"
    );

    // weighted[t] = plain[t] · weight[t] · c for one constant c.
    let scaled_mean = plain
        .index_axis(Axis(0), 0)
        .outer_iter()
        .zip(weights)
        .map(|(row, &w)| row.iter().map(|&v| f64::from(v * w)).sum::<f64>())
        .sum::<f64>()
        / plain.len() as f64;
    let c = (mean(&plain) / scaled_mean) as f32;
    let mut expected = plain.clone();
    for (mut row, &w) in expected
        .index_axis_mut(Axis(0), 0)
        .outer_iter_mut()
        .zip(weights)
    {
        row.mapv_inplace(|v| v * w * c);
    }
    assert_close(&weighted, &expected, 1e-5, "weighted states");
    assert!(weighted != plain);
}

#[test]
fn plain_mode_reads_syntax_literally() {
    let b = CpuBackend::new();
    let a1111 = encoder(&b);
    let plain = encoder(&b).with_mode(PromptMode::Plain);
    let prompt = "(cat:1.5)";
    assert_ne!(encode(&b, &a1111, &[prompt]), encode(&b, &plain, &[prompt]));
    assert_eq!(
        plain.chunks(prompt).unwrap()[0].ids,
        plain.tokenizer().encode_padded(prompt, 77).unwrap()
    );
    // Without syntax, both modes give the same conditioning.
    let text = "a watercolor painting of a lighthouse";
    assert_eq!(encode(&b, &a1111, &[text]), encode(&b, &plain, &[text]));
}

#[test]
fn clip_skip_outside_the_layers_is_an_invalid_argument() {
    let b = CpuBackend::new();
    for skip in [0, 6] {
        match encoder(&b).with_clip_skip(skip) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "clip_skip"),
            other => panic!("clip_skip {skip}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(encoder(&b).with_clip_skip(5).is_ok());
}

#[test]
fn no_prompts_and_bad_weights_are_invalid_arguments() {
    let b = CpuBackend::new();
    let encoder = encoder(&b);
    assert!(matches!(
        encoder.encode_prompts(&b, &[]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        encoder.encode_prompts(&b, &["(cat:1.2.3)"]),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(encoder.hidden_size(), 32);
}
