//! A1111's DDIM CFG++, DPM fast and DPM adaptive, and the part-way (img2img, hires) plans of
//! its timestep samplers and DPM fast, against `tools/fixturegen/a1111_cfgpp.py`
//! (`fixtures/goldens/tiny-sd/a1111_cfgpp.safetensors`) and A1111's rules.

// A failed unwrap in a test is a test failure with its message; no user input here.
#![allow(clippy::unwrap_used)]

use sd_core::{ErrorShare, Guidance, HostTensor, PartWay, Scheduler, TorchGenerator};
use sd_schedulers::{
    A1111DpmSolverSampler, A1111TimestepSampler, A1111UniPcSampler, DpmSolverKind, ScheduleType,
    SchedulerConfig, TimestepSamplerKind, scheduler_from_name,
};
use sd_testkit::Goldens;

/// The step counts the golden has DPM fast's evaluation σ for.
const DPM_FAST_STEPS: [usize; 10] = [1, 2, 3, 4, 5, 6, 7, 9, 10, 25];
/// ln/exp/expm1 of two libms: an ulp or two apart at most.
const SIGMA_RELATIVE_TOLERANCE: f32 = 1e-6;

fn dpm_solver(kind: DpmSolverKind) -> A1111DpmSolverSampler {
    A1111DpmSolverSampler::new(&SchedulerConfig::sd15(), kind, ScheduleType::Uniform, 1.0).unwrap()
}

fn dpm_fast() -> A1111DpmSolverSampler {
    dpm_solver(DpmSolverKind::Fast)
}

#[test]
fn dpm_fast_evaluates_the_model_at_k_diffusions_sigmas() {
    let goldens = Goldens::open("tiny-sd", "a1111_cfgpp.safetensors");
    for steps in DPM_FAST_STEPS {
        let mut sampler = dpm_fast();
        sampler.set_timesteps(steps).unwrap();
        let expected = goldens.host(&format!("dpm_fast/{steps}/evaluation_sigmas"));
        let ours = sampler.evaluation_sigmas();
        // One evaluation per step: n = steps model calls.
        assert_eq!(ours.len(), steps, "DPM fast, {steps} steps");
        assert_eq!(sampler.timesteps().len(), steps);
        for (i, (a, b)) in ours.iter().zip(expected.iter()).enumerate() {
            assert!(
                (a - b).abs() <= SIGMA_RELATIVE_TOLERANCE * b.abs(),
                "DPM fast, {steps} steps, evaluation {i}: σ {a} vs k-diffusion's {b}"
            );
        }
    }
}

#[test]
fn dpm_fast_img2img_runs_the_schedules_tail() {
    let mut sampler = dpm_fast();
    sampler.set_timesteps(10).unwrap();
    let start = sampler.begin_part_way(PartWay::Strength(0.6)).unwrap();
    assert_eq!(start, 0);
    // t_enc = 6: A1111 runs sigma_sched = sigmas[3..] (8 σ), n = 7 evaluations.
    assert_eq!(sampler.timesteps().len(), 7);
    let err = sampler.start_index(0.6).unwrap_err();
    assert!(err.to_string().contains("DPM fast"), "{err}");
    let err = sampler.begin_part_way(PartWay::Strength(1.5)).unwrap_err();
    assert!(err.to_string().contains("strength"), "{err}");
}

#[test]
fn ddim_cfgpp_asks_for_the_unconditional_prediction_and_a_twelfth_and_a_half_of_the_scale() {
    let mut sampler = scheduler_from_name("DDIM CFG++", &SchedulerConfig::sd15()).unwrap();
    assert_eq!(
        sampler.guidance(),
        Guidance {
            scale_multiplier: 1.0 / 12.5,
            needs_unconditional: true,
        }
    );
    let ddim = scheduler_from_name("DDIM", &SchedulerConfig::sd15()).unwrap();
    assert_eq!(ddim.guidance(), Guidance::default());

    sampler.set_timesteps(10).unwrap();
    let x = HostTensor::from_elem(vec![1, 4, 2, 2], 0.5);
    let eps = HostTensor::from_elem(vec![1, 4, 2, 2], 0.1);
    let mut generator = TorchGenerator::new(0);
    // Stepped without the unconditional prediction it says what it needs.
    let err = sampler.step(&eps, 0, &x, &mut generator).unwrap_err();
    assert!(err.to_string().contains("unconditional"), "{err}");
    // With the unconditional ε equal to the guided one, CFG++ is DDIM.
    let mut ddim = scheduler_from_name("DDIM", &SchedulerConfig::sd15()).unwrap();
    ddim.set_timesteps(10).unwrap();
    let ours = sampler
        .step_with_unconditional(&eps, &eps, 0, &x, &mut generator)
        .unwrap();
    assert_eq!(ours, ddim.step(&eps, 0, &x, &mut generator).unwrap());
    // A different unconditional ε moves the result.
    let other = HostTensor::from_elem(vec![1, 4, 2, 2], -0.2);
    let moved = sampler
        .step_with_unconditional(&eps, &other, 1, &x, &mut generator)
        .unwrap();
    assert_ne!(moved, ddim.step(&eps, 1, &x, &mut generator).unwrap());
}

#[test]
fn plms_img2img_restarts_at_a1111s_start_timestep() {
    let config = SchedulerConfig::sd15();
    let mut plms = A1111TimestepSampler::new(&config, TimestepSamplerKind::Plms, 0.0).unwrap();
    plms.set_timesteps(10).unwrap();
    // t_enc = 6: the run over timesteps 1 … 501 from the top, the pseudo Euler step first
    // (501, then 401 again for its second evaluation).
    assert_eq!(plms.begin_part_way(PartWay::Strength(0.6)).unwrap(), 0);
    assert_eq!(
        plms.timesteps(),
        &[501.0, 401.0, 401.0, 301.0, 201.0, 101.0]
    );
    // The hires fix's pass of 4 kept steps: t_enc = 3, timesteps[..3].
    plms.set_timesteps(10).unwrap();
    let kept = PartWay::Keeping {
        kept: 4,
        strength: 0.4,
    };
    assert_eq!(plms.begin_part_way(kept).unwrap(), 0);
    assert_eq!(plms.timesteps(), &[201.0, 101.0, 101.0]);
    // Strength 1 keeps the txt2img plan.
    plms.set_timesteps(10).unwrap();
    let full = plms.timesteps().to_vec();
    assert_eq!(plms.begin_part_way(PartWay::Strength(1.0)).unwrap(), 0);
    assert_eq!(plms.timesteps(), full.as_slice());
}

#[test]
fn unipc_img2img_replans_from_a1111s_start_and_needs_three_steps() {
    let config = SchedulerConfig::sd15();
    let mut unipc = A1111UniPcSampler::new(&config).unwrap();
    unipc.set_timesteps(10).unwrap();
    assert_eq!(unipc.begin_part_way(PartWay::Strength(0.6)).unwrap(), 0);
    // 6 steps from t = 501/1000 + 1/1000: the UNet sees (t − 1/1000)·1000, first 501.
    let timesteps = unipc.timesteps();
    assert_eq!(timesteps.len(), 6);
    assert!((timesteps[0] - 501.0).abs() < 1e-3, "{timesteps:?}");
    // t_enc = 2 < UniPC's order 3: A1111 asserts; here a typed error.
    unipc.set_timesteps(10).unwrap();
    let err = unipc.begin_part_way(PartWay::Strength(0.25)).unwrap_err();
    assert!(err.to_string().contains("UniPC"), "{err}");
}

/// Runs DPM adaptive's three evaluations of its current attempt with ε = 0.1·x, from `x`.
fn attempt(sampler: &mut A1111DpmSolverSampler, first: usize, x: &HostTensor) -> HostTensor {
    let mut generator = TorchGenerator::new(0);
    let mut sample = x.clone();
    for index in first..first + 3 {
        let eps = sample.mapv(|v| 0.1 * v);
        sample = sampler.step(&eps, index, &sample, &mut generator).unwrap();
    }
    sample
}

#[test]
fn dpm_adaptive_plans_as_its_error_control_decides() {
    let mut sampler = dpm_solver(DpmSolverKind::Adaptive);
    sampler.set_timesteps(10).unwrap();
    // The first attempt: three evaluations, at s, s + h/3, s + 2h/3.
    assert_eq!(sampler.timesteps().len(), 3);
    let sigmas = sampler.evaluation_sigmas();
    assert!(sigmas[0] > sigmas[1] && sigmas[1] > sigmas[2], "{sigmas:?}");
    let x = HostTensor::from_shape_fn(vec![1, 4, 2, 2], |i| 1.0 + i[1] as f32 - 0.5 * i[3] as f32);
    let mut generator = TorchGenerator::new(1);

    // Nothing to settle before an attempt ends.
    assert_eq!(sampler.error_share(), None);
    attempt(&mut sampler, 0, &x);
    let share = sampler.error_share().unwrap();
    assert_eq!(share.elements, 16);
    // A batch error far above the tolerance: the attempt is retried from its start with a
    // shorter step.
    let huge = ErrorShare {
        sum_of_squares: 1e6,
        elements: 16,
    };
    let retried = sampler.settle_step(huge, &x, &mut generator).unwrap();
    assert_eq!(retried, x);
    let sigmas = sampler.evaluation_sigmas();
    assert_eq!(sigmas.len(), 6);
    assert_eq!(
        sigmas[3], sigmas[0],
        "the retry starts where the attempt did"
    );
    assert!(sigmas[4] > sigmas[1], "a shorter step: {sigmas:?}");
    // A tiny error keeps the step: the sample moves on, the next attempt starts at its end.
    attempt(&mut sampler, 3, &x);
    let tiny = ErrorShare {
        sum_of_squares: 1e-12,
        elements: 16,
    };
    let kept = sampler.settle_step(tiny, &x, &mut generator).unwrap();
    assert_ne!(kept, x);
    assert_eq!(sampler.timesteps().len(), 9);
    // DPM fast has no error control.
    let fast = dpm_fast();
    assert_eq!(fast.error_share(), None);
}
