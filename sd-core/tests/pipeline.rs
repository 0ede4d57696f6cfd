//! The generic pipeline's control flow, with stand-in components that record what they are
//! asked. (Numerics against diffusers are the root crate's generation goldens.)

#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::cell::RefCell;

use sd_core::cpu::{CpuBackend, CpuTensor};
use sd_core::pipeline::{Control, GenerationRequest, GrayImage, Pipeline, RgbImage};
use sd_core::{
    Backend, Denoiser, Error, HostTensor, LatentCodec, LatentDist, NormalSource, Result,
    ScheduleState, Scheduler, TensorInfo, TextEncoder, TextOptions,
};

/// Encodes each prompt as a row filled with its length.
#[derive(Default)]
struct Text {
    calls: RefCell<Vec<Vec<String>>>,
}

impl TextEncoder<CpuBackend> for Text {
    fn encode(&self, b: &CpuBackend, prompts: &[&str], _: &TextOptions) -> Result<CpuTensor> {
        self.calls
            .borrow_mut()
            .push(prompts.iter().map(|p| p.to_string()).collect());
        let rows: Vec<f32> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.len() as f32, 4 * 8))
            .collect();
        b.upload(&HostTensor::from_shape_vec(vec![prompts.len(), 4, 8], rows).unwrap())
    }

    fn hidden_size(&self) -> usize {
        8
    }
}

/// Predicts zeros; records the batch, channels and the context's first value per row.
struct Unet {
    in_channels: usize,
    calls: RefCell<Vec<(usize, usize, Vec<f32>)>>,
    inputs: RefCell<Vec<HostTensor>>,
}

impl Unet {
    fn new(in_channels: usize) -> Self {
        Unet {
            in_channels,
            calls: RefCell::default(),
            inputs: RefCell::default(),
        }
    }
}

impl Denoiser<CpuBackend> for Unet {
    fn predict_noise(
        &self,
        b: &CpuBackend,
        latents: &CpuTensor,
        _timestep: f64,
        context: &CpuTensor,
    ) -> Result<CpuTensor> {
        let shape = latents.shape().to_vec();
        let context = b.download(context)?;
        let firsts = context
            .outer_iter()
            .map(|row| row.iter().next().copied().unwrap())
            .collect();
        self.calls.borrow_mut().push((shape[0], shape[1], firsts));
        self.inputs.borrow_mut().push(b.download(latents)?);
        b.upload(&HostTensor::zeros(vec![shape[0], 4, shape[2], shape[3]]))
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn spatial_multiple(&self) -> usize {
        2
    }
}

/// Halves (encode) and doubles (decode) the sides with zeros; factor 2.
struct Vae;

impl LatentCodec<CpuBackend> for Vae {
    fn encode(&self, b: &CpuBackend, image: &CpuTensor) -> Result<LatentDist<CpuTensor>> {
        let s = image.shape();
        let zeros = b.upload(&HostTensor::zeros(vec![s[0], 4, s[2] / 2, s[3] / 2]))?;
        Ok(LatentDist {
            mean: zeros.clone(),
            logvar: zeros,
        })
    }

    fn decode(&self, b: &CpuBackend, latents: &CpuTensor) -> Result<CpuTensor> {
        let s = latents.shape();
        b.upload(&HostTensor::zeros(vec![s[0], 3, s[2] * 2, s[3] * 2]))
    }

    fn scaling_factor(&self) -> f32 {
        0.5
    }

    fn downscale_factor(&self) -> usize {
        2
    }

    fn latent_channels(&self) -> usize {
        4
    }
}

/// Four timesteps; a step returns the sample unchanged.
#[derive(Debug)]
struct Steps {
    timesteps: Vec<f64>,
}

impl ScheduleState for Steps {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn steps(&self) -> usize {
        self.timesteps.len()
    }
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    fn scale_model_input(&self, sample: &HostTensor, _index: usize) -> Result<HostTensor> {
        Ok(sample.clone())
    }
    fn add_noise(
        &self,
        original: &HostTensor,
        _noise: &HostTensor,
        _index: usize,
    ) -> Result<HostTensor> {
        Ok(original.clone())
    }
}

impl Scheduler for Steps {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        self.timesteps = (0..steps).rev().map(|i| i as f64 * 100.0).collect();
        Ok(())
    }
    fn schedule(&self) -> &dyn ScheduleState {
        self
    }
    fn step(
        &mut self,
        _model_output: &HostTensor,
        _index: usize,
        sample: &HostTensor,
        _generator: &mut dyn NormalSource,
    ) -> Result<HostTensor> {
        Ok(sample.clone())
    }
}

fn steps() -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(Steps { timesteps: vec![] }))
}

fn pipeline(in_channels: usize) -> Pipeline<CpuBackend, Text, Unet, Vae> {
    Pipeline::new(
        CpuBackend::new(),
        Text::default(),
        Unet::new(in_channels),
        Vae,
    )
    .with_default_size(8, 8)
}

#[test]
fn guidance_above_one_runs_negative_rows_then_prompt_rows() {
    let p = pipeline(4);
    let request = GenerationRequest::new("four")
        .negative_prompt("ab")
        .steps(3)
        .batch_size(2);
    let out = p.generate(&request, &steps).unwrap();
    assert_eq!(out.images.len(), 2);
    assert_eq!(
        p.text_encoder().calls.borrow().as_slice(),
        &[vec!["ab".to_string(), "four".to_string()]]
    );
    let calls = p.denoiser().calls.borrow();
    assert_eq!(calls.len(), 3);
    // Batch 2 doubled; context rows: negative (length 2) twice, then the prompt (4) twice.
    assert_eq!(calls[0], (4, 4, vec![2.0, 2.0, 4.0, 4.0]));
}

#[test]
fn guidance_one_skips_the_unconditional_pass() {
    let p = pipeline(4);
    let request = GenerationRequest::new("four")
        .negative_prompt("ignored")
        .guidance_scale(1.0)
        .steps(2);
    p.generate(&request, &steps).unwrap();
    assert_eq!(
        p.text_encoder().calls.borrow().as_slice(),
        &[vec!["four".to_string()]]
    );
    assert!(
        p.denoiser()
            .calls
            .borrow()
            .iter()
            .all(|(batch, _, ctx)| *batch == 1 && ctx == &[4.0])
    );
}

#[test]
fn img2img_runs_only_the_steps_after_the_start_index() {
    let p = pipeline(4);
    let image = RgbImage::new(8, 8, vec![128; 8 * 8 * 3]).unwrap();
    let request = GenerationRequest::new("x").steps(10).init_image(image, 0.6);
    p.generate(&request, &steps).unwrap();
    // int(10 · 0.6) = 6 of 10 steps.
    assert_eq!(p.denoiser().calls.borrow().len(), 6);
}

#[test]
fn strength_that_leaves_no_step_is_an_error() {
    let p = pipeline(4);
    let image = RgbImage::new(8, 8, vec![0; 8 * 8 * 3]).unwrap();
    let err = p
        .generate(
            &GenerationRequest::new("x")
                .steps(10)
                .init_image(image, 0.05),
            &steps,
        )
        .unwrap_err();
    assert!(err.to_string().contains("strength"), "{err}");
    assert!(p.denoiser().calls.borrow().is_empty());
}

#[test]
fn an_inpainting_unet_without_a_mask_repaints_everything() {
    let p = pipeline(9);
    assert!(p.is_inpainting());
    p.generate(
        &GenerationRequest::new("x").steps(1).guidance_scale(1.0),
        &steps,
    )
    .unwrap();
    let inputs = p.denoiser().inputs.borrow();
    let input = &inputs[0];
    assert_eq!(input.shape(), &[1, 9, 4, 4]);
    // Channel 4 is the mask: all ones.
    assert!(
        input
            .index_axis(ndarray::Axis(1), 4)
            .iter()
            .all(|&m| m == 1.0)
    );
}

#[test]
fn an_inpainting_unet_sees_the_mask_at_latent_resolution() {
    let p = pipeline(9);
    let image = RgbImage::new(8, 8, vec![0; 8 * 8 * 3]).unwrap();
    // Left half white (repaint).
    let mask: Vec<u8> = (0..64).map(|i| if i % 8 < 4 { 255 } else { 0 }).collect();
    let request = GenerationRequest::new("x")
        .steps(1)
        .guidance_scale(1.0)
        .init_image(image, 1.0)
        .mask(GrayImage::new(8, 8, mask).unwrap());
    p.generate(&request, &steps).unwrap();
    let inputs = p.denoiser().inputs.borrow();
    let mask = inputs[0].index_axis(ndarray::Axis(1), 4).to_owned();
    assert_eq!(mask.shape(), &[1, 4, 4]);
    for (index, &m) in mask.indexed_iter() {
        assert_eq!(m, if index[2] < 2 { 1.0 } else { 0.0 });
    }
}

#[test]
fn a_callback_sees_every_step_and_can_cancel() {
    let p = pipeline(4);
    let mut seen = Vec::new();
    let err = p
        .generate_with_progress(
            &GenerationRequest::new("x").steps(5),
            &steps,
            &mut |progress| {
                seen.push((progress.step, progress.total, progress.preview(0).is_some()));
                if progress.step == 2 {
                    Control::Cancel
                } else {
                    Control::Continue
                }
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Cancelled { step: 2, total: 5 }),
        "{err}"
    );
    assert_eq!(seen, vec![(1, 5, true), (2, 5, true)]);
    assert_eq!(p.denoiser().calls.borrow().len(), 2);
}

/// Finish (A1111's interrupt): no further step, and the latents of that step are decoded.
#[test]
fn a_callback_can_finish_early_and_get_the_latents_so_far() {
    let p = pipeline(4);
    let mut latents_at_stop = None;
    let out = p
        .generate_with_progress(
            &GenerationRequest::new("x").steps(5).size(8, 8),
            &steps,
            &mut |progress| {
                if progress.step == 3 {
                    latents_at_stop = Some(progress.latents.clone());
                    Control::Finish
                } else {
                    Control::Continue
                }
            },
        )
        .unwrap();
    assert_eq!(p.denoiser().calls.borrow().len(), 3);
    assert_eq!(Some(out.latents), latents_at_stop);
    assert_eq!(out.images.len(), 1);
}

#[test]
fn a_denoiser_that_fits_neither_layout_is_refused() {
    let p = pipeline(5);
    let err = p
        .generate(&GenerationRequest::new("x").steps(1), &steps)
        .unwrap_err();
    assert!(err.to_string().contains("5 input channels"), "{err}");
}

#[test]
fn images_come_out_at_the_requested_size() {
    let p = pipeline(4);
    let out = p
        .generate(&GenerationRequest::new("x").steps(1).size(12, 8), &steps)
        .unwrap();
    assert_eq!((out.images[0].width(), out.images[0].height()), (12, 8));
    assert_eq!(out.latents.shape(), &[1, 4, 4, 6]);
    // Zeros decode to mid grey (0.5 · 255 = 127.5 rounds to even 128).
    assert!(out.images[0].pixels().iter().all(|&p| p == 128));
}
