//! `PhiloxGenerator` (A1111's "NV" source) against A1111's generator, bit for bit: the calls of
//! `fixtures/goldens/philox.json`, made in order on one generator per seed, from
//! tools/fixturegen/philox.py (A1111's rng_philox.py definition in numpy).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_core::PhiloxGenerator;
use sd_core::weights::SafetensorsFile;
use sd_testkit::fixtures;

#[test]
fn nv_streams_equal_a1111s_bit_for_bit() {
    let goldens = fixtures().join("goldens");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(goldens.join("philox.json")).unwrap())
            .unwrap();
    let file = SafetensorsFile::open(goldens.join("philox.safetensors")).unwrap();
    let mut calls = 0;
    for (seed, shapes) in manifest["cases"].as_object().unwrap() {
        let mut generator = PhiloxGenerator::new(seed.parse().unwrap());
        for (call, shape) in shapes.as_array().unwrap().iter().enumerate() {
            let shape_name = shape.as_str().unwrap();
            let dims: Vec<usize> = shape_name.split('x').map(|d| d.parse().unwrap()).collect();
            let ours = generator.randn(&dims);
            let expected = file
                .get(&format!("seed{seed}/call{call}/{shape_name}"))
                .unwrap();
            assert_eq!(ours.shape(), expected.shape(), "seed {seed} call {call}");
            for (i, (a, b)) in ours.iter().zip(expected.iter()).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "seed {seed} call {call} ({shape_name}) element {i}: {a} vs {b}"
                );
            }
            calls += 1;
        }
    }
    assert!(calls >= 15, "only {calls} calls checked");
}
