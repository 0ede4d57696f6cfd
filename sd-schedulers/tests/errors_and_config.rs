//! Bad input gives typed errors that say what is wrong; configs resolve the way diffusers'
//! `from_config` resolves them.

// A failed unwrap in a test is a test failure with its message; no user input here.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use sd_core::{Error, HostTensor, TorchGenerator};
use sd_schedulers::{SchedulerConfig, known_names, scheduler_from_name};

fn sd15() -> SchedulerConfig {
    SchedulerConfig::sd15()
}

fn latents() -> HostTensor {
    HostTensor::zeros(ndarray::IxDyn(&[1, 4, 8, 8]))
}

#[test]
fn an_unknown_scheduler_name_lists_the_known_ones() {
    let err = scheduler_from_name("Euler b", &sd15())
        .err()
        .expect("must fail");
    match &err {
        Error::UnknownScheduler { name, known } => {
            assert_eq!(name, "Euler b");
            assert!(known.iter().any(|k| k == "Euler a"));
            assert!(known.iter().any(|k| k == "DPMSolverMultistepScheduler"));
        }
        other => panic!("expected UnknownScheduler, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("Euler b") && message.contains("DPM++ 2M Karras"),
        "{message}"
    );
}

#[test]
fn names_are_case_insensitive_and_every_listed_name_builds_on_sd15() {
    for name in known_names() {
        for spelling in [name.to_string(), name.to_lowercase(), name.to_uppercase()] {
            let mut scheduler = scheduler_from_name(&spelling, &sd15())
                .unwrap_or_else(|e| panic!("{spelling}: {e}"));
            scheduler
                .set_timesteps(20)
                .unwrap_or_else(|e| panic!("{spelling}: {e}"));
            assert!(!scheduler.timesteps().is_empty(), "{spelling}");
        }
    }
}

#[test]
fn zero_steps_and_more_steps_than_training_timesteps_are_refused() {
    for name in known_names() {
        let mut scheduler = scheduler_from_name(name, &sd15()).unwrap();
        for steps in [0, 1001] {
            match scheduler.set_timesteps(steps) {
                Err(Error::InvalidArgument { name: arg, reason }) => {
                    assert_eq!(arg, "steps", "{name}: {reason}");
                }
                other => {
                    panic!("{name} with {steps} steps: expected InvalidArgument, got {other:?}")
                }
            }
        }
    }
}

#[test]
fn lcm_refuses_more_steps_than_its_distillation_schedule() {
    let mut lcm = scheduler_from_name("LCMScheduler", &sd15()).unwrap();
    assert!(lcm.set_timesteps(50).is_ok());
    assert!(matches!(
        lcm.set_timesteps(51),
        Err(Error::InvalidArgument { ref name, .. }) if name == "steps"
    ));
}

#[test]
fn strength_outside_zero_to_one_is_refused() {
    // diffusers' img2img rule (A1111's samplers follow A1111's, tests/a1111_schedules.rs).
    let mut scheduler = scheduler_from_name("EulerAncestralDiscreteScheduler", &sd15()).unwrap();
    scheduler.set_timesteps(10).unwrap();
    for strength in [-0.1, 1.5, f64::NAN] {
        assert!(
            matches!(
                scheduler.start_index(strength),
                Err(Error::InvalidArgument { ref name, .. }) if name == "strength"
            ),
            "strength {strength}"
        );
    }
    assert_eq!(
        scheduler.start_index(0.0).unwrap(),
        10,
        "strength 0 leaves nothing to do"
    );
    assert_eq!(scheduler.start_index(1.0).unwrap(), 0);
}

#[test]
fn stepping_before_set_timesteps_or_past_the_end_is_an_error() {
    let mut scheduler = scheduler_from_name("DPM++ 2M", &sd15()).unwrap();
    let x = latents();
    let mut generator = TorchGenerator::new(0);
    assert!(matches!(
        scheduler.step(&x, 0, &x, &mut generator),
        Err(Error::InvalidArgument { ref name, .. }) if name == "index"
    ));
    scheduler.set_timesteps(5).unwrap();
    assert!(scheduler.step(&x, 5, &x, &mut generator).is_err());
    assert!(scheduler.scale_model_input(&x, 5).is_err());
    assert!(scheduler.add_noise(&x, &x, 5).is_err());
}

#[test]
fn mismatched_shapes_are_a_shape_error() {
    let mut generator = TorchGenerator::new(0);
    let x = latents();
    let wrong = HostTensor::zeros(ndarray::IxDyn(&[1, 4, 8, 9]));
    for name in known_names() {
        let mut scheduler = scheduler_from_name(name, &sd15()).unwrap();
        scheduler.set_timesteps(10).unwrap();
        assert!(
            matches!(
                scheduler.step(&wrong, 0, &x, &mut generator),
                Err(Error::Shape { .. })
            ),
            "{name}: step"
        );
        assert!(
            matches!(scheduler.add_noise(&x, &wrong, 0), Err(Error::Shape { .. })),
            "{name}: add_noise"
        );
    }
}

#[test]
fn config_errors_name_the_file_and_the_field() {
    let origin = Path::new("model/scheduler/scheduler_config.json");
    let cases = [
        (r#"{"beta_schedule": "cosine"}"#, "beta_schedule"),
        (r#"{"timestep_spacing": "uniform"}"#, "timestep_spacing"),
        (r#"{"prediction_type": "flow"}"#, "prediction_type"),
        (r#"{"thresholding": true}"#, "thresholding"),
        (
            r#"{"num_train_timesteps": 1, "beta_start": 0.1}"#,
            "num_train_timesteps",
        ),
        (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
    ];
    for (json, field) in cases {
        let config = SchedulerConfig::from_json(json, origin).unwrap();
        match scheduler_from_name("DDIMScheduler", &config) {
            Err(Error::Config { path, field: f, .. }) => {
                assert_eq!(path, origin, "{json}");
                assert_eq!(f, field, "{json}");
            }
            other => panic!("{json}: expected a Config error, got {:?}", other.err()),
        }
    }
    assert!(matches!(
        SchedulerConfig::from_json("{not json", origin),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        SchedulerConfig::from_file("/nonexistent/scheduler_config.json"),
        Err(Error::Io { .. })
    ));
}

#[test]
fn pndm_without_skip_prk_steps_is_refused_rather_than_run_as_plms() {
    let config = SchedulerConfig::from_json(r#"{"skip_prk_steps": false}"#, "c.json").unwrap();
    assert!(matches!(
        scheduler_from_name("PNDMScheduler", &config),
        Err(Error::Config { ref field, .. }) if field == "skip_prk_steps"
    ));
}

#[test]
fn the_builtin_sd15_config_is_the_fixture_file_key_for_key() {
    let file = sd_testkit::pipeline("tiny-sd").join("scheduler/scheduler_config.json");
    let from_file = SchedulerConfig::from_file(&file).unwrap();
    for name in known_names() {
        let mut a = scheduler_from_name(name, &sd15()).unwrap();
        let mut b = scheduler_from_name(name, &from_file).unwrap();
        a.set_timesteps(25).unwrap();
        b.set_timesteps(25).unwrap();
        assert_eq!(a.timesteps(), b.timesteps(), "{name}");
        assert_eq!(a.init_noise_sigma(), b.init_noise_sigma(), "{name}");
    }
}

#[test]
fn missing_keys_take_each_class_default_like_from_config() {
    // SD 1.5's file has no timestep_spacing: DDIM-family classes default to leading, the
    // k-diffusion and multistep classes to linspace.
    let first = |name: &str| {
        let mut s = scheduler_from_name(name, &sd15()).unwrap();
        s.set_timesteps(10).unwrap();
        s.timesteps()[0]
    };
    assert_eq!(first("DDIMScheduler"), 901.0);
    assert_eq!(first("PNDM"), 901.0);
    assert_eq!(first("DDPM"), 901.0);
    assert_eq!(first("Euler"), 999.0);
    assert_eq!(first("DPM++ 2M"), 999.0);
    // An explicit key wins over the class default.
    let trailing =
        SchedulerConfig::from_json(r#"{"timestep_spacing": "trailing"}"#, "c.json").unwrap();
    let mut ddim = scheduler_from_name("DDIMScheduler", &trailing).unwrap();
    ddim.set_timesteps(10).unwrap();
    assert_eq!(ddim.timesteps()[0], 999.0);
}

#[test]
fn heun_makes_two_model_evaluations_per_step() {
    let mut heun = scheduler_from_name("Heun", &sd15()).unwrap();
    heun.set_timesteps(10).unwrap();
    assert_eq!(heun.order(), 2);
    assert_eq!(heun.timesteps().len(), 19);
    assert_eq!(heun.inference_steps(), 10);
    let mut euler = scheduler_from_name("Euler", &sd15()).unwrap();
    euler.set_timesteps(10).unwrap();
    assert_eq!(euler.order(), 1);
}

#[test]
fn unipc_variants_diffusers_cannot_finish_are_refused() {
    // With the final σ = 0, diffusers 0.42 ends these runs in NaN or ∞.
    for (json, field) in [
        (r#"{"solver_type": "bh1"}"#, "solver_type"),
        (r#"{"predict_x0": false}"#, "predict_x0"),
        (r#"{"lower_order_final": false}"#, "lower_order_final"),
    ] {
        let config = SchedulerConfig::from_json(json, "c.json").unwrap();
        assert!(
            matches!(
                scheduler_from_name("UniPCMultistepScheduler", &config),
                Err(Error::Config { field: ref f, .. }) if f == field
            ),
            "{json}"
        );
    }
}

fn override_pair(key: &str, value: &str) -> Vec<(String, String)> {
    vec![(key.to_string(), value.to_string())]
}

#[test]
fn scheduler_config_overrides_name_the_key_and_the_value() {
    for (key, value, expected) in [
        ("use_karas_sigmas", "true", "unknown key"),
        ("_class_name", "DDIMScheduler", "unknown key"),
        ("solver_order", "two", "solver_order=two"),
        ("use_karras_sigmas", "yes", "use_karras_sigmas=yes"),
        ("algorithm_type", "3", "algorithm_type=3"),
    ] {
        match sd15().with_overrides(&override_pair(key, value)) {
            Err(Error::InvalidArgument { name, reason }) => {
                assert_eq!(name, "scheduler config");
                assert!(
                    reason.contains(&format!("`{key}={value}`")) && reason.contains(expected),
                    "{reason}"
                );
                if expected == "unknown key" {
                    assert!(
                        reason.contains("use_karras_sigmas"),
                        "lists the keys: {reason}"
                    );
                }
            }
            other => panic!("{key}={value}: expected InvalidArgument, got {other:?}"),
        }
    }
    for text in ["solver_order", "=3", ""] {
        assert!(
            matches!(
                sd_schedulers::parse_override(text),
                Err(Error::InvalidArgument { .. })
            ),
            "{text:?}"
        );
    }
    assert_eq!(
        sd_schedulers::parse_override(" final_sigmas_type = sigma_min ").unwrap(),
        ("final_sigmas_type".to_string(), "sigma_min".to_string())
    );
}

#[test]
fn a_well_typed_override_the_scheduler_cannot_run_fails_at_build_naming_the_field() {
    for (class, key, value) in [
        (
            "DPMSolverSinglestepScheduler",
            "algorithm_type",
            "dpmsolver+++",
        ),
        (
            "DPMSolverSinglestepScheduler",
            "final_sigmas_type",
            "sigma_max",
        ),
        ("DPMSolverSinglestepScheduler", "solver_order", "4"),
        ("DEISMultistepScheduler", "solver_type", "unipc"),
        ("KDPM2DiscreteScheduler", "timestep_spacing", "cosine"),
        (
            "KDPM2AncestralDiscreteScheduler",
            "prediction_type",
            "sample",
        ),
        ("EulerDiscreteScheduler", "beta_start", "-1"),
    ] {
        let config = sd15().with_overrides(&override_pair(key, value)).unwrap();
        match scheduler_from_name(class, &config).err() {
            Some(Error::Config { path, field, .. }) => {
                assert_eq!(field, key, "{class}");
                assert!(
                    path.to_string_lossy().contains("--scheduler-config"),
                    "{}",
                    path.display()
                );
            }
            other => panic!("{class} {key}={value}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn overrides_act_as_the_same_keys_in_the_file() {
    let overridden = sd15()
        .with_overrides(&[
            ("timestep_spacing".into(), "trailing".into()),
            ("use_karras_sigmas".into(), "false".into()),
            ("steps_offset".into(), "0".into()),
        ])
        .unwrap();
    let text = sd_schedulers::SD15_SCHEDULER_CONFIG.replace(
        "\"steps_offset\": 1,",
        "\"steps_offset\": 0, \"timestep_spacing\": \"trailing\", \"use_karras_sigmas\": false,",
    );
    let written = SchedulerConfig::from_json(&text, "edited").unwrap();
    for class in [
        "EulerDiscreteScheduler",
        "DDIMScheduler",
        "KDPM2DiscreteScheduler",
    ] {
        let mut a = scheduler_from_name(class, &overridden).unwrap();
        let mut b = scheduler_from_name(class, &written).unwrap();
        a.set_timesteps(10).unwrap();
        b.set_timesteps(10).unwrap();
        assert_eq!(a.timesteps(), b.timesteps(), "{class}");
        assert_eq!(a.timesteps()[0], 999.0, "{class}: trailing starts at T - 1");
    }
}

#[test]
fn tcd_refuses_a_gamma_outside_zero_to_one() {
    for eta in [-0.1f32, 1.5, f32::NAN] {
        let options = sd_schedulers::SamplerOptions {
            eta: Some(eta),
            ..Default::default()
        };
        match sd_schedulers::scheduler_from_name_with("TCDScheduler", &sd15(), options) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "eta"),
            other => panic!("eta {eta}: expected InvalidArgument, got {:?}", other.err()),
        }
    }
}

#[test]
fn dpmsolver_sde_config_errors_name_the_field() {
    let two_spacings = sd15()
        .with_overrides(&[
            ("use_karras_sigmas".into(), "true".into()),
            ("use_beta_sigmas".into(), "true".into()),
        ])
        .unwrap();
    match scheduler_from_name("DPMSolverSDEScheduler", &two_spacings).err() {
        Some(Error::Config { field, reason, .. }) => {
            assert_eq!(field, "use_karras_sigmas");
            assert!(reason.contains("use_beta_sigmas"), "{reason}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // Spacings only DPMSolverSDE implements are refused by the other classes, not ignored.
    for (class, key) in [
        ("EulerDiscreteScheduler", "use_exponential_sigmas"),
        ("KDPM2DiscreteScheduler", "use_beta_sigmas"),
    ] {
        let config = sd15().with_overrides(&override_pair(key, "true")).unwrap();
        match scheduler_from_name(class, &config).err() {
            Some(Error::Config { field, .. }) => assert_eq!(field, key, "{class}"),
            other => panic!("{class} {key}: expected a config error, got {other:?}"),
        }
    }
    let sample = sd15()
        .with_overrides(&override_pair("prediction_type", "sample"))
        .unwrap();
    assert!(matches!(
        scheduler_from_name("DPMSolverSDEScheduler", &sample).err(),
        Some(Error::Config { ref field, .. }) if field == "prediction_type"
    ));
    // numpy's SeedSequence takes no negative entropy: a typed error naming the override.
    match sd15().with_overrides(&override_pair("noise_sampler_seed", "-1")) {
        Err(Error::InvalidArgument { reason, .. }) => {
            assert!(reason.contains("noise_sampler_seed=-1"), "{reason}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn dpmsolver_sde_refuses_a_second_evaluation_before_its_first() {
    let mut scheduler = scheduler_from_name("DPMSolverSDEScheduler", &sd15()).unwrap();
    scheduler.set_timesteps(4).unwrap();
    assert_eq!(
        scheduler.timesteps().len(),
        7,
        "two evaluations per step but the last"
    );
    let x = latents();
    let mut generator = TorchGenerator::new(0);
    assert!(matches!(
        scheduler.step(&x, 1, &x, &mut generator),
        Err(Error::InvalidArgument { ref name, .. }) if name == "index"
    ));
}
