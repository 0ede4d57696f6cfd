//! What merging one rank-32 LoRA into the full-size SD 1.5 UNet costs, next to one f32 UNet
//! step (batch 2, 64×64 latents), measured in one process so machine load moves both alike.
//!
//!     cargo run --release --example lora_cost [-- --locon]
//!
//! No download: the UNet's weights are seeded random ones. They are written once (f16, 1.7 GB)
//! to `sd-rs-lora-cost/` in the system temp folder, because a LoRA is resolved against a
//! checkpoint's module names; the LoRA file (kohya names, rank 32, every attention projection,
//! feed-forward and proj_in/out of the UNet — with `--locon` also every resnet and sampler conv)
//! goes next to it. The cost of applying it is the UNet build with the LoRA minus the build
//! without (file read, name resolution, ΔW = up·down and the add, for every adapted weight).
//! Printed: wall time and process CPU time (all threads) of each, and the ratios.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use half::f16;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sd_core::cpu::CpuBackend;
use sd_core::weights::synthetic::Synthetic;
use sd_core::weights::{Component, LdmLayout, Overlay, WeightStore};
use sd_core::{Backend, Denoiser, HostTensor, Result, TorchGenerator};
use sd_unet::{UNet2DConditionModel, UNetConfig};
use stable_diffusion::lora::{LoraOverlay, LoraSpec};

const RANK: usize = 32;
const ALPHA: f32 = 16.0;
const STEPS_TIMED: usize = 2;

/// Records the name and shape of every UNet weight the model reads (and changes nothing).
#[derive(Debug, Default)]
struct Recorder(Mutex<BTreeMap<String, Vec<usize>>>);

impl Overlay for Recorder {
    fn describe(&self) -> String {
        "recorder".into()
    }
    fn touches(&self, component: Component, _: &str) -> bool {
        component == Component::Unet
    }
    fn apply(&self, _: Component, name: &str, below: Option<HostTensor>) -> Result<HostTensor> {
        let tensor = below.unwrap_or_else(|| HostTensor::zeros(vec![0]));
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        names.insert(name.to_string(), tensor.shape().to_vec());
        Ok(tensor)
    }
}

/// Process CPU time (user + system, all threads).
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// (wall, CPU) time of `f`.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration, Duration)> {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let out = f()?;
    Ok((out, wall.elapsed(), cpu_time() - cpu))
}

fn f16_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values
        .flat_map(|v| f16::from_f32(v).to_le_bytes())
        .collect()
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F16, shape.clone(), data).expect("sizes match");
            (name.as_str(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("the temp folder is writable");
}

/// Whether a kohya LoRA adapts `name` (a UNet weight): attention linears, feed-forward,
/// proj_in/out; with `locon`, every conv of the resnets and samplers too.
fn adapted(name: &str, shape: &[usize], locon: bool) -> bool {
    let module = name.trim_end_matches(".weight");
    if !name.ends_with(".weight") || shape.len() < 2 {
        return false;
    }
    let attention = module.contains(".attentions.")
        && [
            "to_q",
            "to_k",
            "to_v",
            "to_out.0",
            "ff.net.0.proj",
            "ff.net.2",
            "proj_in",
            "proj_out",
        ]
        .iter()
        .any(|k| module.ends_with(k));
    let conv = shape.len() == 4 && (module.contains(".resnets.") || module.contains("samplers."))
        || module.ends_with("time_emb_proj");
    attention || (locon && conv)
}

fn main() -> Result<()> {
    let locon = std::env::args().any(|a| a == "--locon");
    let b = CpuBackend::new();
    let config = UNetConfig::sd15(4)?;
    let dir = std::env::temp_dir().join("sd-rs-lora-cost");
    std::fs::create_dir_all(&dir).map_err(|source| sd_core::Error::Io {
        path: dir.clone(),
        source,
    })?;

    // One UNet over synthetic weights, recording their names and shapes; timed steps.
    let recorder = Arc::new(Recorder::default());
    let synthetic = WeightStore::synthetic(0).with_overlay(recorder.clone());
    let unet = UNet2DConditionModel::from_store(&b, config.clone(), &synthetic)?;
    let mut generator = TorchGenerator::new(0);
    let latents = b.upload(&generator.randn(&[2, 4, 64, 64]))?;
    let context = b.upload(&generator.randn(&[2, 77, 768]))?;
    unet.predict_noise(&b, &latents, 500.0, &context)?; // warm-up
    let mut step = (Duration::MAX, Duration::MAX);
    for _ in 0..STEPS_TIMED {
        let ((), wall, cpu) =
            timed(|| unet.predict_noise(&b, &latents, 500.0, &context).map(drop))?;
        step = (step.0.min(wall), step.1.min(cpu));
    }
    drop(unet);
    let shapes = recorder.0.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // The checkpoint (f16) and the LoRA file.
    let unet_file = dir.join("unet.safetensors");
    if !unet_file.is_file() {
        let source = Synthetic { seed: 0 };
        let tensors: Vec<_> = shapes
            .iter()
            .map(|(name, shape)| {
                let values = source.tensor(name, shape);
                (
                    name.clone(),
                    shape.clone(),
                    f16_bytes(values.iter().copied()),
                )
            })
            .collect();
        write_safetensors(&unet_file, &tensors);
    }
    let mut lora = Vec::new();
    let mut adapted_params = 0usize;
    let source = Synthetic { seed: 1 };
    for (name, shape) in shapes.iter().filter(|(n, s)| adapted(n, s, locon)) {
        let module = name.trim_end_matches(".weight");
        let key = format!("lora_unet_{}", module.replace('.', "_"));
        let (out, fan_in): (usize, usize) = (shape[0], shape[1..].iter().product());
        let mut down_shape = vec![RANK, shape[1]];
        down_shape.extend_from_slice(&shape[2..]);
        let up_shape: Vec<usize> = if shape.len() == 4 {
            vec![out, RANK, 1, 1]
        } else {
            vec![out, RANK]
        };
        let down = source.tensor(&format!("{key}.down"), &down_shape);
        let up = source.tensor(&format!("{key}.up"), &up_shape);
        lora.push((
            format!("{key}.lora_down.weight"),
            down_shape,
            f16_bytes(down.iter().copied()),
        ));
        lora.push((
            format!("{key}.lora_up.weight"),
            up_shape,
            f16_bytes(up.iter().copied()),
        ));
        lora.push((
            format!("{key}.alpha"),
            vec![],
            f16_bytes(std::iter::once(ALPHA)),
        ));
        adapted_params += out * fan_in;
    }
    let lora_file = dir.join(if locon {
        "locon-r32.safetensors"
    } else {
        "lora-r32.safetensors"
    });
    write_safetensors(&lora_file, &lora);
    let modules = lora.len() / 3;

    // The cost: building the UNet with the LoRA merged, minus building it without.
    let store = WeightStore::open_component_files(Component::Unet, &[&unet_file])?;
    let layout = LdmLayout::sd15().unet;
    let build = |store: &WeightStore| UNet2DConditionModel::from_store(&b, config.clone(), store);
    build(&store)?; // page the file in
    let (_, plain_wall, plain_cpu) = timed(|| build(&store))?;
    let (_, lora_wall, lora_cpu) = timed(|| {
        let (overlay, report) =
            LoraOverlay::load(&store, &layout, &[LoraSpec::new(&lora_file, 1.0)])?;
        assert!(
            report.files[0].skipped.is_empty(),
            "{:?}",
            report.files[0].skipped
        );
        build(&overlay.apply_to(&store))
    })?;
    let (apply_wall, apply_cpu) = (
        lora_wall.saturating_sub(plain_wall),
        lora_cpu.saturating_sub(plain_cpu),
    );

    let s = |d: Duration| d.as_secs_f64();
    println!(
        "rank-{RANK} {} on {modules} UNet modules ({:.0} M of the UNet's weights), {} threads",
        if locon { "LoCon" } else { "LoRA" },
        adapted_params as f64 / 1e6,
        rayon::current_num_threads()
    );
    println!(
        "UNet step, batch 2, f32 (best of {STEPS_TIMED}): wall {:.2} s, cpu {:.2} s",
        s(step.0),
        s(step.1)
    );
    println!(
        "UNet build without LoRA: wall {:.2} s, cpu {:.2} s",
        s(plain_wall),
        s(plain_cpu)
    );
    println!(
        "UNet build with LoRA:    wall {:.2} s, cpu {:.2} s",
        s(lora_wall),
        s(lora_cpu)
    );
    println!(
        "applying the LoRA: wall {:.2} s = {:.1} % of a step, cpu {:.2} s = {:.1} % of a step",
        s(apply_wall),
        100.0 * s(apply_wall) / s(step.0),
        s(apply_cpu),
        100.0 * s(apply_cpu) / s(step.1)
    );
    Ok(())
}
