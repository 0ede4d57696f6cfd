//! `TorchGenerator::randn` against real `torch.randn` output, bit for bit.
//!
//! The goldens come from tools/randn_goldens.py (torch 2.15, see its docstring for the layout).

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use sd_core::TorchGenerator;
use sd_core::rng::NormalMode;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Goldens {
    torch_version: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    mode: String,
    seed: u64,
    calls: Vec<Call>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    Shape(Vec<usize>),
    ManualSeed(u64),
}

fn goldens_path() -> PathBuf {
    sd_testkit::fixtures().join("goldens/randn.safetensors")
}

fn read_goldens(bytes: &[u8]) -> (Goldens, SafeTensors<'_>) {
    let (_, metadata) = SafeTensors::read_metadata(bytes).expect("randn.safetensors header");
    let description = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("randn_goldens"))
        .expect("metadata key randn_goldens");
    let goldens: Goldens = serde_json::from_str(description).expect("randn_goldens JSON");
    (
        goldens,
        SafeTensors::deserialize(bytes).expect("randn.safetensors"),
    )
}

fn golden_bits(tensors: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<u32>) {
    let view = tensors
        .tensor(name)
        .unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let bits = view
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (view.shape().to_vec(), bits)
}

/// Replays one case; returns a description of the first difference, if any.
fn replay(case: &Case, tensors: &SafeTensors<'_>) -> Option<String> {
    let mode = match case.mode.as_str() {
        "avx" => NormalMode::Avx2,
        "libm" => NormalMode::Libm,
        other => panic!("case {}: unknown mode {other}", case.name),
    };
    let mut generator = TorchGenerator::new(case.seed).with_normal_mode(mode);
    assert_eq!(generator.initial_seed(), case.seed);
    let mut draw = 0;
    for call in &case.calls {
        let shape = match call {
            Call::ManualSeed(seed) => {
                generator.manual_seed(*seed);
                continue;
            }
            Call::Shape(shape) => shape,
        };
        let name = format!("{}/{draw}", case.name);
        draw += 1;
        let (want_shape, want) = golden_bits(tensors, &name);
        let got = generator.randn(shape);
        assert_eq!(got.shape(), want_shape.as_slice(), "{name}");
        let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
        if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
            let mismatches = (0..want.len()).filter(|&i| got[i] != want[i]).count();
            return Some(format!(
                "{name} (seed {}, shape {shape:?}): first mismatch at {i}: got {} ({:#010x}), torch {} ({:#010x}); \
                 {mismatches} of {} elements differ",
                case.seed,
                f32::from_bits(got[i]),
                got[i],
                f32::from_bits(want[i]),
                want[i],
                want.len()
            ));
        }
    }
    None
}

fn check_mode(mode: &str) {
    let bytes = std::fs::read(goldens_path())
        .expect("fixtures/goldens/randn.safetensors (run tools/randn_goldens.py)");
    let (goldens, tensors) = read_goldens(&bytes);
    let cases: Vec<&Case> = goldens.cases.iter().filter(|c| c.mode == mode).collect();
    assert!(cases.len() >= 10, "too few {mode} cases in the goldens");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| replay(case, &tensors))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {mode} cases differ from torch {}:\n{}",
        failures.len(),
        cases.len(),
        goldens.torch_version,
        failures.join("\n")
    );
}

#[test]
fn randn_matches_torch_avx2_kernel_bit_for_bit() {
    check_mode("avx");
}

/// torch's scalar kernel calls the C library's logf/cosf/sinf, and so does Rust's std: this holds
/// where both use the same libm (glibc on Linux).
#[test]
fn randn_matches_torch_default_capability_kernel_bit_for_bit() {
    check_mode("libm");
}

#[test]
fn shape_only_matters_through_its_element_count() {
    let flat = TorchGenerator::new(3).randn(&[2 * 4 * 8 * 8]);
    let latent = TorchGenerator::new(3).randn(&[2, 4, 8, 8]);
    assert_eq!(latent.shape(), [2, 4, 8, 8]);
    assert!(
        flat.iter()
            .zip(latent.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

#[test]
fn empty_shape_draws_nothing() {
    let mut generator = TorchGenerator::new(11);
    assert_eq!(generator.randn(&[0, 4]).len(), 0);
    let after_empty = generator.randn(&[20]);
    let fresh = TorchGenerator::new(11).randn(&[20]);
    assert_eq!(after_empty, fresh);
}
