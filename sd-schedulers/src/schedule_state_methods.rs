//! The `Scheduler` methods that only read a sampler's schedule state.

/// Expands, inside an `impl Scheduler`, to `timesteps`, `inference_steps`, `init_noise_sigma`,
/// `scale_model_input` and `add_noise`, each answered by the sampler's `schedule` field (an
/// `AlphaTimesteps` or a `SigmaTimesteps`). The impl itself keeps `set_timesteps` and `step`:
/// what makes each sampler that sampler.
macro_rules! schedule_state_methods {
    () => {
        fn timesteps(&self) -> &[f64] {
            self.schedule.timesteps()
        }

        fn inference_steps(&self) -> usize {
            self.schedule.steps()
        }

        fn init_noise_sigma(&self) -> f32 {
            self.schedule.init_noise_sigma()
        }

        fn scale_model_input(
            &self,
            sample: &sd_core::HostTensor,
            index: usize,
        ) -> sd_core::Result<sd_core::HostTensor> {
            self.schedule.scale_model_input(sample, index)
        }

        fn add_noise(
            &self,
            original: &sd_core::HostTensor,
            noise: &sd_core::HostTensor,
            index: usize,
        ) -> sd_core::Result<sd_core::HostTensor> {
            self.schedule.add_noise(original, noise, index)
        }
    };
}
