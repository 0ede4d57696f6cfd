//! Every scheduler against diffusers 0.42.1: timesteps, σ, init_noise_sigma, the sample after
//! every step for a fixed fake model, img2img timestep selection and add_noise.
//!
//! Goldens: fixtures/goldens/schedulers.{json,safetensors} (tools/fixturegen/schedulers.py) and
//! scheduler_classes.{json,safetensors} (tools/fixturegen/scheduler_classes.py: the classes added
//! later, with config overrides, on smaller latents) and dpmsolver_sde.{json,safetensors}
//! (tools/fixturegen/dpmsolver_sde.py: DPMSolverSDEScheduler with its Brownian-tree noise); each
//! JSON's `description` states the recipe this test replays.

// A failed unwrap in a test is a test failure with its message; no user input here.
#![allow(clippy::unwrap_used)]

use safetensors::{Dtype, SafeTensors};
use sd_core::{HostTensor, Scheduler, TorchGenerator};
use sd_schedulers::{
    DeisScheduler, DpmSolverScheduler, DpmSolverSinglestepScheduler, EulerAncestralScheduler,
    EulerScheduler, HeunScheduler, LmsScheduler, SamplerOptions, SchedulerConfig, UniPcScheduler,
    scheduler_from_name, scheduler_from_name_with,
};
use serde::Deserialize;

/// The bar: samples within 1e-5 (max abs) of diffusers.
const MAX_ABS_TOLERANCE: f32 = 1e-5;

/// diffusers' f32 `sqrt` (torch on MKL) is not correctly rounded: on the machine that wrote the
/// goldens 17–20 % of its f32 square roots are one ulp off the IEEE result we compute, so a
/// scalar coefficient (√ᾱ, σ) can differ by an ulp and samples drift a few ulp from the
/// reference over a run. Where samples are large (σ-samplers start at |x| ≈ 50, where 1e-5 is
/// under 3 ulp) the bar is therefore this many ulp of the step's largest |x|.
const ULP_TOLERANCE: f32 = 16.0;

/// Setups whose coefficients cancel (DEIS's log-ρ integrals, the third-order SDE Heun term
/// (1 − e^(−2h) − 2h)/(2h)²), so one ulp of a scalar `exp`/`ln` (torch's and numpy's are not
/// correctly rounded, ours are) moves the reference itself by more than [`ULP_TOLERANCE`]:
/// recomputing diffusers' DEIS order 3 in f64 moves its 25-step trace by 5e-5 (~25 ulp of its
/// max |x|), and diffusers' singlestep SDE Heun with correctly rounded scalar exp/ln moves by
/// 1.3e-3 (~85 ulp). The bar for these is the reference's own sensitivity, in ulp of max |x|.
///
/// DPMSolverSDE: torch's f32 square root (MKL's vectorised one, also for 0-dim tensors) is one
/// ulp off the correctly rounded value for 190 of SD 1.5's 1000 training σ = √((1−ᾱ)/ᾱ); where
/// such a σ is a step's σ, torchsde's snapping of query times to six decimals can round the two
/// σ to neighbouring 1e-6 grid points, and the Brownian increment then differs by the motion over
/// 1e-6 (~1e-3 of unit noise): measured on "dpmsolver_sde" at 10 steps (σ₅ = 1.3449284 in
/// diffusers, 1.3449285 here), the noise of every query matching torchsde bit for bit when given
/// diffusers' σ (see the note of issue 16, sde2).
const ILL_CONDITIONED_ULPS: &[(&str, f32)] = &[
    ("deis", 32.0),
    ("dpmsolver_singlestep_sde_heun", 96.0),
    ("dpmsolver_sde", DPMSOLVER_SDE_ULPS),
];

/// See [`ILL_CONDITIONED_ULPS`].
const DPMSOLVER_SDE_ULPS: f32 = 16384.0;

/// The allowed max abs error for a step of setup `name` whose golden sample is `golden`.
fn tolerance(name: &str, golden: &HostTensor) -> f32 {
    let scale = golden.iter().fold(0f32, |m, v| m.max(v.abs()));
    let ulps = ILL_CONDITIONED_ULPS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or(ULP_TOLERANCE, |&(_, ulps)| ulps);
    MAX_ABS_TOLERANCE.max(ulps * ulp(scale))
}

fn ulp(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1) - x
}

const TRACE_SEED: u64 = 0;

/// The golden files (stems in fixtures/goldens) this test replays.
const GOLDEN_SETS: [&str; 3] = ["schedulers", "scheduler_classes", "dpmsolver_sde"];

#[derive(Debug, Deserialize)]
struct Manifest {
    base_config: serde_json::Map<String, serde_json::Value>,
    schedulers: std::collections::BTreeMap<String, Setup>,
}

#[derive(Debug, Deserialize)]
struct Setup {
    class: String,
    from_config_overrides: serde_json::Map<String, serde_json::Value>,
    traces: std::collections::BTreeMap<String, TraceInfo>,
    img2img: std::collections::BTreeMap<String, Img2Img>,
    add_noise_timestep: f64,
}

#[derive(Debug, Deserialize)]
struct TraceInfo {
    init_noise_sigma: f32,
    order: usize,
    step_kwargs: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Img2Img {
    timesteps: Vec<f64>,
    begin_index: Option<usize>,
}

struct Goldens {
    manifest: Manifest,
    bytes: Vec<u8>,
}

impl Goldens {
    fn load(stem: &str) -> Self {
        let dir = sd_testkit::fixtures().join("goldens");
        let json = std::fs::read_to_string(dir.join(format!("{stem}.json")))
            .unwrap_or_else(|e| panic!("{stem}.json: {e}"));
        let bytes = std::fs::read(dir.join(format!("{stem}.safetensors")))
            .unwrap_or_else(|e| panic!("{stem}.safetensors: {e}"));
        Goldens {
            manifest: serde_json::from_str(&json).expect("golden manifest layout"),
            bytes,
        }
    }

    /// Every golden set.
    fn all() -> impl Iterator<Item = Goldens> {
        GOLDEN_SETS.into_iter().map(Goldens::load)
    }

    fn tensor(&self, name: &str) -> HostTensor {
        let tensors = SafeTensors::deserialize(&self.bytes).expect("schedulers.safetensors");
        let view = tensors
            .tensor(name)
            .unwrap_or_else(|e| panic!("golden {name}: {e}"));
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        HostTensor::from_shape_vec(view.shape(), values).expect("golden shape")
    }

    /// The config diffusers built `name` from: the SD 1.5 file plus the setup's overrides.
    fn config(&self, setup: &Setup) -> SchedulerConfig {
        let mut config = self.manifest.base_config.clone();
        config.extend(setup.from_config_overrides.clone());
        // from_config's keyword arguments win over the file's record of defaulted keys.
        if let Some(serde_json::Value::Array(defaulted)) = config.get_mut("_use_default_values") {
            defaulted.retain(|key| {
                !key.as_str()
                    .is_some_and(|k| setup.from_config_overrides.contains_key(k))
            });
        }
        let text = serde_json::Value::Object(config).to_string();
        SchedulerConfig::from_json(&text, "schedulers.json base_config").expect("config")
    }

    fn build(&self, name: &str) -> Box<dyn Scheduler> {
        let setup = &self.manifest.schedulers[name];
        let eta = setup.traces["10"]
            .step_kwargs
            .get("eta")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0) as f32;
        scheduler_from_name_with(
            &setup.class,
            &self.config(setup),
            SamplerOptions {
                eta: Some(eta),
                ..SamplerOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// The KDPM2 classes' midpoint timesteps come from σ through torch's f32 `log`/`exp` and numpy's
/// f32 `log`, none of them correctly rounded (ours are), so they may differ from diffusers' in the
/// last bits of the f32; so may DPMSolverSDE's midpoint and respaced timesteps (σ → t through
/// numpy's f32 `log` of the training σ). Every other timestep is exact.
const KDPM2_MIDPOINT_ULPS: f32 = 4.0;

/// The classes whose σ → t timesteps are compared within [`KDPM2_MIDPOINT_ULPS`].
fn has_interpolated_midpoints(class: &str) -> bool {
    class.starts_with("KDPM2") || class == "DPMSolverSDEScheduler"
}

fn assert_timesteps_match(setup: &Setup, ours: &[f64], golden: &[f64], what: &str) {
    assert_eq!(ours.len(), golden.len(), "{what}: {ours:?} vs {golden:?}");
    let interpolated = has_interpolated_midpoints(&setup.class);
    for (&a, &b) in ours.iter().zip(golden) {
        let (a, b) = (a as f32, b as f32);
        // Near t = 0 the last bits of ln σ decide between 0 and ~1e-6.
        let allowed = if interpolated {
            (KDPM2_MIDPOINT_ULPS * ulp(b.abs())).max(1e-5)
        } else {
            0.0
        };
        assert!(
            (a - b).abs() <= allowed,
            "{what}: {ours:?} vs diffusers {golden:?}"
        );
    }
}

fn max_abs_diff(a: &HostTensor, b: &HostTensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// eps = 0.1·x_in + f32(cos(f64(t)/100)), the fake model of the goldens.
fn fake_model(x_in: &HostTensor, timestep: f64) -> HostTensor {
    let offset = (timestep / 100.0).cos() as f32;
    x_in.mapv(|x| 0.1 * x + offset)
}

/// Replays the golden trace of `name` at `steps` with `scheduler`; asserts every step is within
/// [`tolerance`] and returns the worst max abs error, and the worst in ulp of the step's max |x|.
fn replay(
    goldens: &Goldens,
    name: &str,
    steps: usize,
    mut scheduler: Box<dyn Scheduler>,
) -> (f32, f32) {
    let key = format!("{name}/{steps}");
    let info = &goldens.manifest.schedulers[name].traces[&steps.to_string()];
    scheduler.set_timesteps(steps).expect("set_timesteps");

    let golden_timesteps = goldens.tensor(&format!("{key}/timesteps"));
    let setup = &goldens.manifest.schedulers[name];
    assert_timesteps_match(
        setup,
        scheduler.timesteps(),
        &values(&golden_timesteps)
            .into_iter()
            .map(f64::from)
            .collect::<Vec<_>>(),
        &format!("{key}: timesteps"),
    );
    assert_eq!(
        scheduler.init_noise_sigma(),
        info.init_noise_sigma,
        "{key}: init_noise_sigma"
    );
    assert_eq!(scheduler.order(), info.order, "{key}: order");

    let samples = goldens.tensor(&format!("{key}/samples"));
    let golden = |i: usize| samples.index_axis(ndarray::Axis(0), i).to_owned();
    let mut generator = TorchGenerator::new(TRACE_SEED);
    let sigma0 = scheduler.init_noise_sigma();
    let latent_shape = &samples.shape()[1..];
    let mut x = generator.randn(latent_shape).mapv(|v| v * sigma0);
    let mut worst = (max_abs_diff(&x, &golden(0)), 0.0f32);
    for (i, &t) in scheduler.timesteps().to_vec().iter().enumerate() {
        let x_in = scheduler
            .scale_model_input(&x, i)
            .expect("scale_model_input");
        let eps = fake_model(&x_in, t);
        x = scheduler.step(&eps, i, &x, &mut generator).expect("step");
        let expected = golden(i + 1);
        let err = max_abs_diff(&x, &expected);
        assert!(
            err <= tolerance(name, &expected),
            "{key}: step {i} (t = {t}) differs from diffusers by {err:e}, allowed {:e}",
            tolerance(name, &expected)
        );
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        worst = (worst.0.max(err), worst.1.max(err / ulp(scale)));
    }
    worst
}

#[test]
fn every_scheduler_follows_the_diffusers_trace_step_for_step() {
    for goldens in Goldens::all() {
        replay_all(&goldens);
    }
}

fn replay_all(goldens: &Goldens) {
    for name in goldens.manifest.schedulers.keys() {
        for steps in [10, 25] {
            let (abs, ulps) = replay(goldens, name, steps, goldens.build(name));
            println!(
                "{name:>16} {steps:>2} steps: max abs error {abs:.2e} ({ulps:.1} ulp of max |x|)"
            );
        }
    }
}

/// The short names that stand for a diffusers class (A1111's DDIM, PLMS, UniPC and LCM run
/// diffusers' classes here; A1111's k-diffusion names are A1111's samplers, see
/// tests/a1111_schedules.rs) build the setups diffusers documents.
#[test]
fn short_names_build_the_setups_diffusers_documents() {
    let goldens = Goldens::load("schedulers");
    let sd15 = goldens.config(&Setup {
        class: String::new(),
        from_config_overrides: serde_json::Map::new(),
        traces: Default::default(),
        img2img: Default::default(),
        add_noise_timestep: 0.0,
    });
    // (A1111's names DDIM, PLMS, UniPC and LCM run A1111's own samplers: tests/a1111_exact.rs.)
    for (name, setup) in [
        ("PNDM", "pndm"),
        ("DDIMScheduler", "ddim_eta0"),
        ("UniPCMultistepScheduler", "unipc_bh2"),
        ("LCMScheduler", "lcm"),
    ] {
        let scheduler = scheduler_from_name(name, &sd15).expect(name);
        replay(&goldens, setup, 10, scheduler);
    }
}

/// diffusers draws the Brownian tree's seed from torch's global generator when the config sets
/// no `noise_sampler_seed`; sd-rs takes the generator's own seed (the image's), i.e. diffusers'
/// run with `noise_sampler_seed` = that seed (the golden setup "dpmsolver_sde").
#[test]
fn dpmsolver_sde_without_a_noise_seed_seeds_its_tree_with_the_generators_seed() {
    let goldens = Goldens::load("dpmsolver_sde");
    let seeded = &goldens.manifest.schedulers["dpmsolver_sde"];
    assert_eq!(
        seeded.from_config_overrides["noise_sampler_seed"],
        TRACE_SEED
    );
    let unseeded = Setup {
        class: seeded.class.clone(),
        from_config_overrides: serde_json::Map::new(),
        traces: Default::default(),
        img2img: Default::default(),
        add_noise_timestep: 0.0,
    };
    let config = goldens.config(&unseeded);
    assert_eq!(config.noise_sampler_seed, None);
    for steps in [10, 25] {
        let scheduler = scheduler_from_name("DPMSolverSDEScheduler", &config).unwrap();
        replay(&goldens, "dpmsolver_sde", steps, scheduler);
    }
}

#[test]
fn sigmas_match_diffusers() {
    for goldens in Goldens::all() {
        check_sigmas(&goldens);
    }
}

/// The σ schedules of the classes whose `sigmas` diffusers keeps one per step (the KDPM2 classes
/// keep one per evaluation in their own layout; their traces cover them).
fn check_sigmas(goldens: &Goldens) {
    for (name, setup) in &goldens.manifest.schedulers {
        let config = goldens.config(setup);
        for steps in [10usize, 25] {
            let sigmas: Vec<f32> = match setup.class.as_str() {
                "EulerDiscreteScheduler" => {
                    with_steps(EulerScheduler::new(&config), steps, |s| s.sigmas())
                }
                "EulerAncestralDiscreteScheduler" => {
                    with_steps(EulerAncestralScheduler::new(&config), steps, |s| s.sigmas())
                }
                "LMSDiscreteScheduler" => {
                    with_steps(LmsScheduler::new(&config), steps, |s| s.sigmas())
                }
                "HeunDiscreteScheduler" => {
                    with_steps(HeunScheduler::new(&config), steps, |s| s.sigmas())
                }
                "DPMSolverMultistepScheduler" => {
                    with_steps(DpmSolverScheduler::new(&config), steps, |s| s.sigmas())
                }
                "UniPCMultistepScheduler" => {
                    with_steps(UniPcScheduler::new(&config), steps, |s| s.sigmas())
                }
                "DPMSolverSinglestepScheduler" => {
                    with_steps(DpmSolverSinglestepScheduler::new(&config), steps, |s| {
                        s.sigmas()
                    })
                }
                "DEISMultistepScheduler" => {
                    with_steps(DeisScheduler::new(&config), steps, |s| s.sigmas())
                }
                _ => continue,
            };
            // σ = √((1−ᾱ)/ᾱ): one ulp apart where torch's sqrt is (see ULP_TOLERANCE).
            let golden = values(&goldens.tensor(&format!("{name}/{steps}/sigmas")));
            assert_eq!(sigmas.len(), golden.len(), "{name}/{steps}: sigmas");
            for (i, (ours, theirs)) in sigmas.iter().zip(&golden).enumerate() {
                assert!(
                    (ours - theirs).abs() <= ulp(theirs.abs()),
                    "{name}/{steps}: sigma {i}: {ours} vs diffusers {theirs}"
                );
            }
        }
    }
}

fn with_steps<S: Scheduler>(
    scheduler: sd_core::Result<S>,
    steps: usize,
    sigmas: impl Fn(&S) -> &[f32],
) -> Vec<f32> {
    let mut scheduler = scheduler.expect("scheduler");
    scheduler.set_timesteps(steps).expect("set_timesteps");
    sigmas(&scheduler).to_vec()
}

#[test]
fn img2img_starts_where_diffusers_get_timesteps_does() {
    for goldens in Goldens::all() {
        check_img2img(&goldens);
    }
}

fn check_img2img(goldens: &Goldens) {
    for name in goldens.manifest.schedulers.keys() {
        let setup = &goldens.manifest.schedulers[name];
        for (key, expected) in &setup.img2img {
            let (steps, strength) = key.split_once('/').expect("<steps>/<strength>");
            let (steps, strength): (usize, f64) =
                (steps.parse().unwrap(), strength.parse().unwrap());
            let mut scheduler = goldens.build(name);
            scheduler.set_timesteps(steps).unwrap();
            let start = scheduler.start_index(strength).unwrap();
            assert_timesteps_match(
                setup,
                &scheduler.timesteps()[start..],
                &expected.timesteps,
                &format!("{name} {key}"),
            );
            if let Some(begin) = expected.begin_index {
                assert_eq!(start, begin, "{name} {key}: begin_index");
            }
        }
    }
}

#[test]
fn add_noise_matches_diffusers_at_the_img2img_start() {
    for goldens in Goldens::all() {
        check_add_noise(&goldens);
    }
}

fn check_add_noise(goldens: &Goldens) {
    let original = goldens.tensor("add_noise/original");
    let noise = goldens.tensor("add_noise/noise");
    for (name, setup) in &goldens.manifest.schedulers {
        let mut scheduler = goldens.build(name);
        scheduler.set_timesteps(10).unwrap();
        let start = scheduler.start_index(0.75).unwrap();
        assert_timesteps_match(
            setup,
            &scheduler.timesteps()[start..=start],
            &[setup.add_noise_timestep],
            &format!("{name}: add_noise timestep"),
        );
        let noisy = scheduler.add_noise(&original, &noise, start).unwrap();
        let err = max_abs_diff(&noisy, &goldens.tensor(&format!("add_noise/{name}")));
        assert!(
            err <= MAX_ABS_TOLERANCE,
            "{name}: add_noise differs by {err:e}"
        );
    }
}

fn values(tensor: &HostTensor) -> Vec<f32> {
    tensor.iter().copied().collect()
}
