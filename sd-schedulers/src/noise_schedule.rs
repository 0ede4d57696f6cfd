//! The training noise schedule: betas → ᾱ (alphas_cumprod) → σ, in the precision diffusers
//! computes them (f32 torch tensors), so every scheduler starts from the same bits.

use crate::config::BetaSchedule;

/// The per-training-timestep tables all schedulers derive from.
#[derive(Debug, Clone)]
pub(crate) struct NoiseSchedule {
    /// ᾱ_t = ∏_{s≤t} (1 − β_s), index = training timestep.
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    pub fn new(schedule: &BetaSchedule, num_train_timesteps: usize) -> Self {
        let betas = betas(schedule, num_train_timesteps);
        NoiseSchedule {
            alphas_cumprod: alphas_cumprod(&betas),
        }
    }

    /// σ_t = √((1 − ᾱ_t)/ᾱ_t), the k-diffusion noise level of training timestep t (ascending).
    pub fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// ᾱ at a training timestep; `None` outside the table.
    pub fn alpha_cumprod(&self, timestep: i64) -> Option<f32> {
        usize::try_from(timestep)
            .ok()
            .and_then(|t| self.alphas_cumprod.get(t).copied())
    }
}

fn betas(schedule: &BetaSchedule, n: usize) -> Vec<f32> {
    match schedule {
        BetaSchedule::Linear { start, end } => torch_linspace_f32(*start as f32, *end as f32, n),
        BetaSchedule::ScaledLinear { start, end } => {
            torch_linspace_f32(start.sqrt() as f32, end.sqrt() as f32, n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        BetaSchedule::SquaredCosCapV2 => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
        BetaSchedule::Trained(betas) => betas.iter().map(|&b| b as f32).collect(),
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` bit for bit: torch fills the first half
/// forwards from `start` and the second half backwards from `end`, each value one fused
/// multiply-add of an f32 step.
pub(crate) fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// `torch.cumprod(1 − betas)` for f32: torch accumulates in f64 on the CPU and rounds each
/// partial product to f32.
fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut product = 1.0f64;
    betas
        .iter()
        .map(|&beta| {
            product *= f64::from(1.0 - beta);
            product as f32
        })
        .collect()
}
