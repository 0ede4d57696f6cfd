//! Fuzzing the safetensors loader: random bytes and random mutations of valid files must give
//! `Ok` or a typed error, never a panic, and we must accept exactly the files the reference
//! `safetensors` crate accepts.

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod weights_support;

use proptest::prelude::*;
use sd_core::Error;
use sd_core::weights::{SafetensorsFile, StoredDtype};
use weights_support::{Scratch, counting, raw_tensor, safetensors_bytes};

/// A small valid file with several dtypes, including ones we refuse to convert.
fn seed_file() -> Vec<u8> {
    safetensors_bytes(&[
        counting("a.weight", &[2, 3], 0.0),
        raw_tensor(
            "b.half",
            "F16",
            &[3],
            vec![0x00, 0x3c, 0x00, 0xc0, 0x55, 0x35],
        ),
        raw_tensor("c.brain", "BF16", &[1, 1], vec![0x80, 0x3f]),
        raw_tensor("d.steps", "I64", &[1], 7i64.to_le_bytes().to_vec()),
        counting("e.empty", &[0, 4], 0.0),
    ])
}

/// One edit of a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite the byte at this fraction of the length.
    Set(f64, u8),
    /// Replace an ASCII digit at this fraction of the length by another digit (offsets, shapes).
    Digit(f64, u8),
    /// Cut the file at this fraction of its length.
    Truncate(f64),
    /// Insert bytes at this fraction of the length.
    Insert(f64, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64, any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (0.0..1.0f64, 0u8..10).prop_map(|(at, d)| Mutation::Digit(at, d)),
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (0.0..1.0f64, prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let at = |fraction: f64| ((bytes.len() as f64) * fraction) as usize;
    match mutation {
        Mutation::Set(f, b) => {
            let i = at(*f);
            if let Some(byte) = bytes.get_mut(i) {
                *byte = *b;
            }
        }
        Mutation::Digit(f, d) => {
            let start = at(*f);
            if let Some(i) = (start..bytes.len()).find(|&i| bytes[i].is_ascii_digit()) {
                bytes[i] = b'0' + d;
            }
        }
        Mutation::Truncate(f) => bytes.truncate(at(*f)),
        Mutation::Insert(f, b) => {
            let i = at(*f).min(bytes.len());
            bytes.splice(i..i, b.iter().copied());
        }
    }
}

/// Open `bytes`; an accepted file must read every tensor as f32 or refuse its dtype.
/// Returns whether the file was accepted.
fn open_and_read_all(scratch: &Scratch, bytes: &[u8]) -> bool {
    let path = scratch.write("fuzz.safetensors", bytes);
    match SafetensorsFile::open(&path) {
        Ok(file) => {
            let names: Vec<String> = file.names().map(str::to_string).collect();
            for name in names {
                let info = file.info(&name).unwrap().clone();
                match file.get(&name) {
                    Ok(t) => assert_eq!(t.shape(), info.shape.as_slice()),
                    Err(Error::UnsupportedDtype { .. }) => assert!(!matches!(
                        info.dtype,
                        StoredDtype::F32 | StoredDtype::F16 | StoredDtype::BF16
                    )),
                    Err(e) => panic!("accepted file failed to read {name}: {e}"),
                }
            }
            true
        }
        Err(Error::InvalidSafetensors { path: p, .. }) => {
            assert_eq!(p, path);
            false
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

fn reference_accepts(bytes: &[u8]) -> bool {
    safetensors::SafeTensors::deserialize(bytes).is_ok()
}

#[test]
fn seed_file_is_valid_for_us_and_the_reference() {
    let scratch = Scratch::new("fuzz-seed");
    let bytes = seed_file();
    assert!(reference_accepts(&bytes));
    assert!(open_and_read_all(&scratch, &bytes));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let scratch = Scratch::new("fuzz-random");
        let ours = open_and_read_all(&scratch, &bytes);
        prop_assert_eq!(ours, reference_accepts(&bytes));
    }

    #[test]
    fn random_small_header_lengths_never_panic(
        length in 0u64..64,
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend(body);
        let scratch = Scratch::new("fuzz-length");
        let ours = open_and_read_all(&scratch, &bytes);
        prop_assert_eq!(ours, reference_accepts(&bytes));
    }

    #[test]
    fn mutated_valid_files_never_panic_and_match_the_reference(
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = seed_file();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let scratch = Scratch::new("fuzz-mutate");
        let ours = open_and_read_all(&scratch, &bytes);
        prop_assert_eq!(ours, reference_accepts(&bytes), "after {:?}", mutations);
    }
}
