//! A1111's σ schedules and names against the reference: `get_sigmas` of A1111 1.10 over
//! k-diffusion (`fixtures/goldens/tiny-sd/a1111_samplers.safetensors` and, for the SDE
//! samplers, `a1111_sde.safetensors` and `a1111_sde3m.safetensors`, written by
//! `tools/fixturegen/a1111_samplers.py`, `a1111_sde.py` and `a1111_sde3m.py`) for every sampler,
//! schedule type and several step counts; and A1111's rules for reading sampler and schedule
//! names.

// A failed unwrap in a test is a test failure with its message; no user input here.
#![allow(clippy::unwrap_used)]

use sd_core::Scheduler;
use sd_schedulers::a1111::{a1111_samplers, split_a1111_name};
use sd_schedulers::{
    KDiffusionSampler, KSamplerKind, KSamplerSetup, SamplerOptions, ScheduleType, SchedulerConfig,
    SchedulerKind, a1111_menu, kind_of, resolve_a1111, scheduler_from_name_with,
};
use sd_testkit::Goldens;

const STEP_COUNTS: [usize; 6] = [1, 2, 3, 7, 10, 25];

/// Schedules are computed in f32 with torch's operation order; ln/exp/pow of two libms may
/// still differ by an ulp or two.
const SIGMA_RELATIVE_TOLERANCE: f32 = 1e-6;
/// Timesteps t(σ) interpolate ln σ of the table; an ulp in ln σ moves t by up to ~1e-4 near
/// the large-σ end, where the table's ln σ are 3e-3 apart.
const TIMESTEP_TOLERANCE: f32 = 2e-4;

fn sampler_for(name: &str, schedule: ScheduleType) -> KDiffusionSampler {
    let (found, _) = split_a1111_name(name).unwrap();
    let setup = KSamplerSetup {
        kind: found.kind,
        schedule: found.effective_schedule(schedule),
        discard_penultimate_sigma: found.discard_penultimate_sigma,
        eta: 1.0,
        s_noise: 1.0,
    };
    KDiffusionSampler::new(&SchedulerConfig::sd15(), setup).unwrap()
}

fn assert_close(what: &str, ours: &[f32], expected: &[f32], relative: f32, absolute: f32) {
    assert_eq!(ours.len(), expected.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        let tolerance = absolute.max(relative * b.abs());
        assert!(
            (a - b).abs() <= tolerance,
            "{what}[{i}]: {a} vs reference {b}"
        );
    }
}

#[test]
fn every_sampler_and_schedule_type_gives_a1111s_sigmas() {
    let goldens = Goldens::open("tiny-sd", "a1111_samplers.safetensors");
    let sde_goldens = Goldens::open("tiny-sd", "a1111_sde.safetensors");
    let sde3m_goldens = Goldens::open("tiny-sd", "a1111_sde3m.safetensors");
    let mut checked = 0;
    // DPM fast and DPM adaptive step in DPM-Solver's t, not over this schedule (their
    // goldens: tests/a1111_cfgpp.rs).
    let on_sigma_schedule = || {
        a1111_samplers()
            .iter()
            .filter(|s| s.kind.dpm_solver().is_none())
    };
    for sampler in on_sigma_schedule() {
        let goldens = match sampler.kind {
            KSamplerKind::DpmPp3mSde => &sde3m_goldens,
            kind if kind.uses_brownian_noise() => &sde_goldens,
            _ => &goldens,
        };
        // The schedule types of these golden files (the others: tests/a1111_exact.rs).
        for schedule in ScheduleType::all().take(6) {
            let label = match schedule {
                ScheduleType::Automatic => "automatic",
                other => other.label(),
            };
            for steps in STEP_COUNTS {
                let key = format!("schedule/{}/{label}/{steps}", sampler.name);
                let expected = goldens.host(&format!("{key}/sigmas"));
                let mut ours = sampler_for(sampler.name, schedule);
                ours.set_timesteps(steps).unwrap();
                assert_close(
                    &key,
                    ours.sigmas(),
                    expected.as_slice().unwrap(),
                    SIGMA_RELATIVE_TOLERANCE,
                    0.0,
                );
                // One evaluation per step: the model's timesteps are t(σ) of the schedule.
                if sampler.kind == KSamplerKind::Euler {
                    let timesteps: Vec<f32> = ours.timesteps().iter().map(|&t| t as f32).collect();
                    let expected = goldens.host(&format!("{key}/timesteps"));
                    assert_close(
                        &format!("{key} timesteps"),
                        &timesteps,
                        expected.as_slice().unwrap(),
                        0.0,
                        TIMESTEP_TOLERANCE,
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, on_sigma_schedule().count() * 6 * STEP_COUNTS.len());
}

#[test]
fn second_order_samplers_list_both_evaluations_of_a_step() {
    let mut heun = sampler_for("Heun", ScheduleType::Automatic);
    heun.set_timesteps(10).unwrap();
    // Nine two-evaluation steps, then one Euler step to σ = 0.
    assert_eq!(heun.timesteps().len(), 19);
    assert_eq!(heun.order(), 2);
    let sigmas = heun.sigmas().to_vec();
    let evaluated = heun.evaluation_sigmas();
    assert_eq!(
        evaluated[1], sigmas[1],
        "Heun's second evaluation is at σ_{{i+1}}"
    );
    let mut dpm2 = sampler_for("DPM2", ScheduleType::Automatic);
    dpm2.set_timesteps(10).unwrap();
    let (s0, s1) = (dpm2.sigmas()[0], dpm2.sigmas()[1]);
    let mid = dpm2.evaluation_sigmas()[1];
    assert!(
        (mid - (s0 * s1).sqrt()).abs() < 1e-4 * mid,
        "DPM2 midpoint {mid}"
    );
    // img2img by A1111's rule: 10 steps at strength 0.5 run the last 6.
    assert_eq!(heun.start_index(0.5).unwrap(), 2 * 4);
    let mut euler = sampler_for("Euler", ScheduleType::Automatic);
    euler.set_timesteps(10).unwrap();
    assert_eq!(euler.start_index(0.5).unwrap(), 4);
    // Strength 1 is capped at 0.999 and still runs every step.
    assert_eq!(euler.start_index(1.0).unwrap(), 0);
}

#[test]
fn combined_names_split_as_a1111_reads_them() {
    for (name, sampler, schedule) in [
        ("DPM++ 2M Karras", "DPM++ 2M", Some(ScheduleType::Karras)),
        ("dpm2 a karras", "DPM2 a", Some(ScheduleType::Karras)),
        ("Euler a", "Euler a", None),
        ("k_euler_ancestral", "Euler a", None),
        (
            "DPM++ 2M SGMUniform",
            "DPM++ 2M",
            Some(ScheduleType::SgmUniform),
        ),
        ("Heun Exponential", "Heun", Some(ScheduleType::Exponential)),
    ] {
        let (found, suffix) = split_a1111_name(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!((found.name, suffix), (sampler, schedule), "{name}");
    }
    assert!(split_a1111_name("Euler b").is_none());
    assert!(split_a1111_name("Karras").is_none());
    assert_eq!(
        kind_of("LMS Karras").unwrap(),
        SchedulerKind::A1111(KSamplerKind::Lms)
    );
}

#[test]
fn resolving_a1111_fields_gives_the_sampler_settings() {
    let settings = resolve_a1111("DPM++ 2M Karras", Some("exponential")).unwrap();
    // The combined name's schedule wins, as in A1111.
    assert_eq!(settings.name.as_deref(), Some("DPM++ 2M"));
    assert_eq!(settings.schedule_type.as_deref(), Some("Karras"));
    let settings = resolve_a1111("Euler a", Some("automatic")).unwrap();
    assert_eq!(settings.name.as_deref(), Some("Euler a"));
    assert_eq!(settings.schedule_type, None);
    let settings = resolve_a1111("k_dpm_2_a", Some("SGM Uniform")).unwrap();
    assert_eq!(settings.name.as_deref(), Some("DPM2 a"));
    assert_eq!(settings.schedule_type.as_deref(), Some("SGM Uniform"));
    assert_eq!(
        resolve_a1111("DDIM", None).unwrap().name.as_deref(),
        Some("DDIM")
    );
    let err = resolve_a1111("Euler a", Some("sideways")).unwrap_err();
    assert!(err.to_string().contains("sideways"), "{err}");
    let err = resolve_a1111("DDIM", Some("Karras")).unwrap_err();
    assert!(err.to_string().contains("DDIM"), "{err}");
    assert!(resolve_a1111("Euler b", None).is_err());
}

#[test]
fn the_menu_lists_every_name_with_its_aliases() {
    let (samplers, schedule_types) = a1111_menu();
    let names: Vec<_> = samplers.iter().map(|s| s.name).collect();
    for name in [
        "Euler a",
        "Euler",
        "LMS",
        "Heun",
        "DPM2",
        "DPM2 a",
        "DPM++ 2S a",
        "DPM++ 2M",
        "DPM++ SDE",
        "DPM++ 2M SDE",
        "DPM++ 2M SDE Heun",
        "DPM++ 3M SDE",
        "DPM fast",
        "DPM adaptive",
        "DDIM",
        "DDIM CFG++",
        "PLMS",
        "UniPC",
        "LCM",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let dpmpp_2m = samplers.iter().find(|s| s.name == "DPM++ 2M").unwrap();
    assert_eq!(dpmpp_2m.aliases, ["k_dpmpp_2m"]);
    assert_eq!(dpmpp_2m.default_scheduler, Some("karras"));
    let dpmpp_2m_sde = samplers.iter().find(|s| s.name == "DPM++ 2M SDE").unwrap();
    assert_eq!(dpmpp_2m_sde.aliases, ["k_dpmpp_2m_sde"]);
    assert_eq!(dpmpp_2m_sde.default_scheduler, Some("exponential"));
    let dpmpp_3m_sde = samplers.iter().find(|s| s.name == "DPM++ 3M SDE").unwrap();
    assert_eq!(dpmpp_3m_sde.aliases, ["k_dpmpp_3m_sde"]);
    assert_eq!(dpmpp_3m_sde.default_scheduler, Some("exponential"));
    let labels: Vec<_> = schedule_types.iter().map(|s| s.label).collect();
    assert_eq!(
        labels,
        [
            "Automatic",
            "Uniform",
            "Karras",
            "Exponential",
            "Polyexponential",
            "SGM Uniform",
            "KL Optimal",
            "Align Your Steps",
            "Simple",
            "Normal",
            "DDIM",
            "Beta"
        ]
    );
    let karras = &schedule_types[2];
    assert_eq!((karras.name, karras.default_rho), ("karras", Some(7.0)));
}

#[test]
fn a_schedule_type_for_a_diffusers_class_is_refused() {
    let options = SamplerOptions {
        schedule_type: Some(ScheduleType::Karras),
        ..SamplerOptions::default()
    };
    let err = scheduler_from_name_with("PNDM", &SchedulerConfig::sd15(), options)
        .err()
        .unwrap();
    assert!(err.to_string().contains("PNDM"), "{err}");
    // Automatic means "nothing chosen" and is accepted everywhere.
    let options = SamplerOptions {
        schedule_type: Some(ScheduleType::Automatic),
        ..SamplerOptions::default()
    };
    assert!(scheduler_from_name_with("PNDM", &SchedulerConfig::sd15(), options).is_ok());
}

#[test]
fn bad_eta_and_steps_are_refused() {
    let options = SamplerOptions {
        eta: Some(f32::NAN),
        ..SamplerOptions::default()
    };
    let err = scheduler_from_name_with("Euler a", &SchedulerConfig::sd15(), options)
        .err()
        .unwrap();
    assert!(err.to_string().contains("eta"), "{err}");
    let mut euler = sampler_for("Euler", ScheduleType::Automatic);
    assert!(euler.set_timesteps(0).is_err());
    assert!(euler.set_timesteps(1001).is_err());
}
