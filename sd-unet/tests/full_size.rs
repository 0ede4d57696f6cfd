//! The full-size SD 1.5 UNet (random weights) against diffusers. Needs the files of
//! `python tools/full_size_goldens.py write` (1.9 GB, not committed), so it is ignored by default:
//!
//!     cargo test --release -p sd-unet --test full_size -- --ignored --nocapture

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use sd_core::cpu::CpuBackend;
use sd_core::weights::WeightStore;
use sd_testkit::{assert_matches_golden, full_size_dir, full_size_goldens};
use sd_unet::{UNet2DConditionModel, UNetConfig};

#[test]
#[ignore = "needs tools/full_size_goldens.py output (1.9 GB)"]
fn sd15_unet_batch2_64x64_matches_diffusers() {
    let goldens = full_size_goldens();
    let store = WeightStore::open(full_size_dir()).unwrap();
    // The built-in SD 1.5 config (what single-file checkpoints use).
    let unet =
        UNet2DConditionModel::from_store(&CpuBackend::new(), UNetConfig::sd15(4).unwrap(), &store)
            .unwrap();
    drop(store);
    let out = unet
        .forward(
            &CpuBackend::new(),
            &goldens.tensor("unet/sample"),
            f64::from(goldens.scalar("unet/timestep")),
            &goldens.tensor("unet/encoder_hidden_states"),
        )
        .unwrap();
    assert_matches_golden("SD 1.5 UNet b2 64x64", &out, &goldens.host("unet/out"));
}
