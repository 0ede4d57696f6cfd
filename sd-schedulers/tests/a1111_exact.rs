//! A1111's own samplers (DDIM, PLMS, UniPC, LCM) and its further schedule types (KL Optimal, Align Your
//! Steps, Simple, Normal, DDIM, Beta) against A1111's code transcribed in
//! `tools/fixturegen/a1111_exact.py` (`fixtures/goldens/tiny-sd/a1111_exact.safetensors`).

// A failed unwrap in a test is a test failure with its message; no user input here.
#![allow(clippy::unwrap_used)]

use sd_core::Scheduler;
use sd_schedulers::a1111::split_a1111_name;
use sd_schedulers::{
    A1111LcmSampler, A1111TimestepSampler, A1111UniPcSampler, KDiffusionSampler, KSamplerSetup,
    SamplerOptions, ScheduleType, SchedulerConfig, TimestepSamplerKind, scheduler_from_name_with,
};
use sd_testkit::Goldens;

const STEP_COUNTS: [usize; 6] = [1, 2, 3, 7, 10, 25];
const NEW_SCHEDULE_TYPES: [ScheduleType; 6] = [
    ScheduleType::KlOptimal,
    ScheduleType::AlignYourSteps,
    ScheduleType::Simple,
    ScheduleType::Normal,
    ScheduleType::Ddim,
    ScheduleType::Beta,
];
/// f32 schedules in torch's operation order; tan/atan/ln/exp of two libms (and scipy's Beta
/// quantile against ours, both far below f32 precision) may still differ by an ulp or two.
const SIGMA_RELATIVE_TOLERANCE: f32 = 1e-6;

fn goldens() -> Goldens {
    Goldens::open("tiny-sd", "a1111_exact.safetensors")
}

fn assert_close(what: &str, ours: &[f32], expected: &[f32], relative: f32) {
    assert_eq!(
        ours.len(),
        expected.len(),
        "{what}: length {ours:?} vs {expected:?}"
    );
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= relative * b.abs(),
            "{what}[{i}]: {a} vs reference {b}"
        );
    }
}

fn k_sampler(name: &str, schedule: ScheduleType) -> KDiffusionSampler {
    let (found, _) = split_a1111_name(name).unwrap();
    let setup = KSamplerSetup {
        kind: found.kind,
        schedule,
        discard_penultimate_sigma: found.discard_penultimate_sigma,
        eta: 1.0,
        s_noise: 1.0,
    };
    KDiffusionSampler::new(&SchedulerConfig::sd15(), setup).unwrap()
}

#[test]
fn new_schedule_types_give_a1111s_sigmas() {
    let goldens = goldens();
    // DPM2 computes one σ more and drops the next-to-last.
    for sampler in ["Euler", "DPM2"] {
        for schedule in NEW_SCHEDULE_TYPES {
            for steps in STEP_COUNTS {
                let key = format!("schedule/{sampler}/{}/{steps}", schedule.label());
                let expected = goldens.host(&format!("{key}/sigmas"));
                let mut ours = k_sampler(sampler, schedule);
                ours.set_timesteps(steps).unwrap();
                assert_close(
                    &key,
                    ours.sigmas(),
                    expected.as_slice().unwrap(),
                    SIGMA_RELATIVE_TOLERANCE,
                );
            }
        }
    }
}

#[test]
fn kl_optimal_ends_at_sigma_min_and_ddim_may_give_more_steps() {
    let mut kl = k_sampler("Euler", ScheduleType::KlOptimal);
    kl.set_timesteps(10).unwrap();
    assert_eq!(kl.sigmas().len(), 11);
    assert!(kl.sigmas()[10] > 0.0, "KL Optimal has no final 0");
    // 1000 // 7 = 142: timesteps 1, 143, …, 995 are 8 σ for 7 steps.
    let mut ddim = k_sampler("Euler", ScheduleType::Ddim);
    ddim.set_timesteps(7).unwrap();
    assert_eq!(ddim.sigmas().len(), 9);
}

#[test]
fn lcm_gives_a1111s_sigmas_and_quantised_timesteps() {
    let goldens = goldens();
    for (schedule, label) in [
        (ScheduleType::Automatic, "automatic"),
        (ScheduleType::Karras, "Karras"),
        (ScheduleType::Exponential, "Exponential"),
        (ScheduleType::KlOptimal, "KL Optimal"),
        (ScheduleType::AlignYourSteps, "Align Your Steps"),
        (ScheduleType::Simple, "Simple"),
        (ScheduleType::Ddim, "DDIM"),
        (ScheduleType::Beta, "Beta"),
    ] {
        for steps in STEP_COUNTS {
            let key = format!("lcm/{label}/{steps}");
            let mut ours = A1111LcmSampler::new(&SchedulerConfig::sd15(), schedule).unwrap();
            ours.set_timesteps(steps).unwrap();
            let sigmas = goldens.host(&format!("{key}/sigmas"));
            assert_close(
                &key,
                ours.sigmas(),
                sigmas.as_slice().unwrap(),
                SIGMA_RELATIVE_TOLERANCE,
            );
            let expected = goldens.host(&format!("{key}/timesteps"));
            for (i, (&ours, &theirs)) in ours.timesteps().iter().zip(&expected).enumerate() {
                let ours = ours as f32;
                if ours == theirs {
                    continue;
                }
                // LCM's own schedule can put a σ exactly halfway (in ln σ) between two table
                // entries; which one is "nearest" then rests on the last bit of exp/ln, which
                // differ between torch's vector math and Rust's libm. One LCM step either way.
                let t = 999.0 - 980.0 * i as f64 / (steps - 1).max(1) as f64;
                let halfway = (((t - 19.0) / 20.0).fract() - 0.5).abs() < 1e-4;
                assert!(
                    schedule == ScheduleType::Automatic && halfway && (ours - theirs).abs() == 20.0,
                    "{key} timesteps[{i}]: {ours} vs reference {theirs}"
                );
            }
        }
    }
}

#[test]
fn ddim_and_plms_evaluate_at_a1111s_timesteps() {
    let goldens = goldens();
    for steps in &STEP_COUNTS[1..] {
        let list = goldens.host(&format!("timesteps/{steps}"));
        let list: Vec<f64> = list.iter().map(|&t| f64::from(t)).collect();
        // DDIM: every timestep but the lowest, from the top.
        let mut ddim =
            A1111TimestepSampler::new(&SchedulerConfig::sd15(), TimestepSamplerKind::Ddim, 0.0)
                .unwrap();
        ddim.set_timesteps(*steps).unwrap();
        let expected: Vec<f64> = list[1..].iter().rev().copied().collect();
        assert_eq!(ddim.timesteps(), expected.as_slice(), "DDIM {steps}");
        // PLMS: the first step evaluates twice, the second time at the next timestep.
        let mut plms =
            A1111TimestepSampler::new(&SchedulerConfig::sd15(), TimestepSamplerKind::Plms, 0.0)
                .unwrap();
        plms.set_timesteps(*steps).unwrap();
        let mut expected_plms = vec![expected[0]];
        expected_plms.push(list[list.len() - 2]);
        expected_plms.extend(&expected[1..]);
        assert_eq!(plms.timesteps(), expected_plms.as_slice(), "PLMS {steps}");
    }
}

#[test]
fn a1111_timestep_samplers_refuse_what_they_do_not_reproduce() {
    let config = SchedulerConfig::sd15();
    let mut ddim = A1111TimestepSampler::new(&config, TimestepSamplerKind::Ddim, 0.0).unwrap();
    let err = ddim.set_timesteps(1).unwrap_err();
    assert!(err.to_string().contains("at least 2 steps"), "{err}");
    // img2img: DDIM runs the tail of its txt2img evaluations; PLMS and UniPC make a plan of
    // their own (begin_part_way: tests/a1111_cfgpp.rs), which start_index cannot give.
    ddim.set_timesteps(10).unwrap();
    // t_enc = 5: the loop runs over timesteps 401 … 101.
    let start = ddim.start_index(0.5).unwrap();
    assert_eq!(ddim.timesteps()[start], 401.0);
    let mut plms = A1111TimestepSampler::new(&config, TimestepSamplerKind::Plms, 0.0).unwrap();
    plms.set_timesteps(10).unwrap();
    let err = plms.start_index(0.5).unwrap_err();
    assert!(err.to_string().contains("PLMS"), "{err}");
    let err = A1111TimestepSampler::new(&config, TimestepSamplerKind::Ddim, f32::NAN).unwrap_err();
    assert!(err.to_string().contains("eta"), "{err}");
    let mut v_config = config.clone();
    v_config.prediction_type = Some("v_prediction".to_string());
    let err = A1111TimestepSampler::new(&v_config, TimestepSamplerKind::Plms, 0.0).unwrap_err();
    assert!(err.to_string().contains("prediction"), "{err}");
    let mut unipc = A1111UniPcSampler::new(&config).unwrap();
    let err = unipc.set_timesteps(2).unwrap_err();
    assert!(err.to_string().contains("order 3"), "{err}");
    unipc.set_timesteps(10).unwrap();
    assert_eq!(unipc.start_index(1.0).unwrap(), 0);
    let err = unipc.start_index(0.5).unwrap_err();
    assert!(err.to_string().contains("UniPC"), "{err}");
    let err = A1111LcmSampler::new(&config, ScheduleType::SgmUniform).unwrap_err();
    assert!(err.to_string().contains("SGM Uniform"), "{err}");
}

#[test]
fn a1111_names_build_a1111s_own_samplers() {
    let config = SchedulerConfig::sd15();
    let build = |name: &str, schedule: Option<ScheduleType>| {
        let options = SamplerOptions {
            schedule_type: schedule,
            ..SamplerOptions::default()
        };
        let mut sampler = scheduler_from_name_with(name, &config, options).unwrap();
        sampler.set_timesteps(10).unwrap();
        sampler.timesteps().to_vec()
    };
    // A1111's DDIM: 9 evaluations from 901; diffusers' DDIMScheduler: 10 from 901 (leading).
    assert_eq!(build("DDIM", None).len(), 9);
    assert_eq!(build("ddim", None)[0], 901.0);
    assert_eq!(build("DDIMScheduler", None).len(), 10);
    // A1111's PLMS: 10 evaluations; diffusers' PNDM with skipped PRK steps: 11.
    assert_eq!(build("PLMS", None).len(), 10);
    assert_eq!(build("PNDM", None).len(), 11);
    // A1111's UniPC: continuous time from 1 in ten equal parts, the UNet at (t − 1/1000)·1000.
    let unipc = build("UniPC", None);
    assert_eq!(unipc.len(), 10);
    assert_eq!(unipc[0], 999.0);
    assert!((unipc[1] - 899.1).abs() < 1e-3, "{unipc:?}");
    assert_eq!(build("UniPCMultistepScheduler", None)[0], 999.0);
    // A1111's LCM: quantised timesteps 999 … 19, and it takes a schedule type.
    let lcm = build("LCM", None);
    assert_eq!((lcm[0], lcm[9]), (999.0, 19.0));
    assert_eq!(build("k_lcm", Some(ScheduleType::Karras)).len(), 10);
}
