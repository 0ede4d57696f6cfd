"""Goldens for AUTOMATIC1111's own samplers (DDIM, PLMS, UniPC, LCM) and its further schedule types, on tiny-sd.

AUTOMATIC1111 is not pip-installable, so what these goldens need from it is transcribed below,
literally (same operations in the same order; only A1111's globals replaced by the values they
hold by default), from AUTOMATIC1111/stable-diffusion-webui:
- modules/sd_samplers_timesteps_impl.py (commit f8391b8a8ff61bf7ebcddc9b387e6c2f206ed056):
  `ddim` and `plms`; modules/sd_samplers_timesteps.py (commit
  1c77b18ac8971769dfc96fd79cb4e34b9a12555e): `CompVisSampler.get_timesteps` and the ε model
  (`CompVisTimestepsDenoiser`) under the CFG denoiser;
- modules/models/diffusion/uni_pc/uni_pc.py (commit 0251dfb250a7ab6b1568dcd56a2b08ed0469dfd4):
  `NoiseScheduleVP` ('discrete'), `UniPC` (the paths A1111's default options take) and
  `interpolate_fn`, with `UniPCCFG` and `unipc` from sd_samplers_timesteps_impl.py;
- modules/sd_samplers_lcm.py (v1.10 line; read at commit 255da37da1871a90c352bcc4ee3617fd8ceed610):
  `LCMCompVisDenoiser` and `sample_lcm`;
- modules/sd_schedulers.py (commit 02b0092d5a8450b282bd7d9c2d84fdfed0f3c6db): `kl_optimal`,
  `get_align_your_steps_sigmas` (its SD 1.5 branch), `simple_scheduler`, `normal_scheduler`,
  `ddim_scheduler`, `beta_scheduler` (opts.beta_dist_alpha = opts.beta_dist_beta = 0.6, A1111's
  defaults).
Everything else (k-diffusion's sampling functions and model wrappers from PyPI, the CFG denoiser,
the per-image generators, the LDM alphas_cumprod, what is the pipeline's) is the a1111_samplers
step's, imported from fixturegen/a1111_samplers.py and described there.

Writes goldens/a1111_exact.json, goldens/tiny-sd/a1111_exact.safetensors (final latents per run;
the sigmas of every new schedule type for several step counts; LCM's sigmas and timesteps) and
the runs' PNGs (a1111x_*.png).
"""

import os
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from scipy import stats

from . import a1111_samplers as A
from .common import load_pipeline, tensor_stats, write_json, write_tensors
from .generations import GUIDANCE_SCALE, NEGATIVE_PROMPT, PROMPT, SIZE, STEPS, save_png

SAMPLING = A.SAMPLING
EXTERNAL = A.EXTERNAL
BETA_DIST_ALPHA = 0.6
BETA_DIST_BETA = 0.6

# ---- modules/sd_schedulers.py (transcribed) -------------------------------------------------


def get_align_your_steps_sigmas(n, sigma_min, sigma_max, device):
    def loglinear_interp(t_steps, num_steps):
        xs = np.linspace(0, 1, len(t_steps))
        ys = np.log(t_steps[::-1])

        new_xs = np.linspace(0, 1, num_steps)
        new_ys = np.interp(new_xs, xs, ys)

        interped_ys = np.exp(new_ys)[::-1].copy()
        return interped_ys

    # shared.sd_model.is_sdxl is False: SD 1.5's sigmas.
    sigmas = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]

    if n != len(sigmas):
        sigmas = np.append(loglinear_interp(sigmas, n), [0.0])
    else:
        sigmas.append(0.0)

    return torch.FloatTensor(sigmas).to(device)


def kl_optimal(n, sigma_min, sigma_max, device):
    alpha_min = torch.arctan(torch.tensor(sigma_min, device=device))
    alpha_max = torch.arctan(torch.tensor(sigma_max, device=device))
    step_indices = torch.arange(n + 1, device=device)
    sigmas = torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)
    return sigmas


def simple_scheduler(n, sigma_min, sigma_max, inner_model, device):
    sigs = []
    ss = len(inner_model.sigmas) / n
    for x in range(n):
        sigs += [float(inner_model.sigmas[-(1 + int(x * ss))])]
    sigs += [0.0]
    return torch.FloatTensor(sigs).to(device)


def normal_scheduler(n, sigma_min, sigma_max, inner_model, device, sgm=False, floor=False):
    start = inner_model.sigma_to_t(torch.tensor(sigma_max))
    end = inner_model.sigma_to_t(torch.tensor(sigma_min))

    if sgm:
        timesteps = torch.linspace(start, end, n + 1)[:-1]
    else:
        timesteps = torch.linspace(start, end, n)

    sigs = []
    for x in range(len(timesteps)):
        ts = timesteps[x]
        sigs.append(inner_model.t_to_sigma(ts))
    sigs += [0.0]
    return torch.FloatTensor(sigs).to(device)


def ddim_scheduler(n, sigma_min, sigma_max, inner_model, device):
    sigs = []
    ss = max(len(inner_model.sigmas) // n, 1)
    x = 1
    while x < len(inner_model.sigmas):
        sigs += [float(inner_model.sigmas[x])]
        x += ss
    sigs = sigs[::-1]
    sigs += [0.0]
    return torch.FloatTensor(sigs).to(device)


def beta_scheduler(n, sigma_min, sigma_max, inner_model, device):
    alpha = BETA_DIST_ALPHA
    beta = BETA_DIST_BETA
    timesteps = 1 - np.linspace(0, 1, n)
    timesteps = [stats.beta.ppf(x, alpha, beta) for x in timesteps]
    sigmas = [sigma_min + (x * (sigma_max - sigma_min)) for x in timesteps]
    sigmas += [0.0]
    return torch.FloatTensor(sigmas).to(device)


# label -> (function, need_inner_model), A1111 1.10's schedule types beyond a1111_samplers' set.
NEW_SCHEDULE_TYPES = {
    "KL Optimal": (kl_optimal, False),
    "Align Your Steps": (get_align_your_steps_sigmas, False),
    "Simple": (simple_scheduler, True),
    "Normal": (normal_scheduler, True),
    "DDIM": (ddim_scheduler, True),
    "Beta": (beta_scheduler, True),
}
SCHEDULE_STEPS = (1, 2, 3, 7, 10, 25)


def get_sigmas(model_wrap, sampler, schedule, steps, default=None, discard=False):
    """A1111's KDiffusionSampler.get_sigmas with default options, for every schedule type."""
    steps += 1 if discard else 0
    label = schedule or A.SCHEDULE_NAMES.get(default)
    sigma_min, sigma_max = model_wrap.sigmas[0].item(), model_wrap.sigmas[-1].item()
    if label is None:
        sigmas = model_wrap.get_sigmas(steps)
    elif label in NEW_SCHEDULE_TYPES:
        function, need_inner_model = NEW_SCHEDULE_TYPES[label]
        kwargs = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        if need_inner_model:
            kwargs["inner_model"] = model_wrap
        sigmas = function(n=steps, **kwargs, device="cpu")
    else:
        sigmas = A.SCHEDULE_TYPES[label](steps, sigma_min, sigma_max, model_wrap)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def k_sampler_sigmas(model_wrap, sampler, schedule, steps):
    _, default, discard = A.A1111_SAMPLERS[sampler]
    return get_sigmas(model_wrap, sampler, schedule, steps, default, discard)


# ---- modules/sd_samplers_timesteps_impl.py (transcribed) ------------------------------------


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(
        torch.float64 if x.device.type != "mps" and x.device.type != "xpu" else torch.float32
    )
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * np.sqrt((1 - alphas_prev.cpu().numpy()) / (1 - alphas.cpu()) * (1 - alphas.cpu() / alphas_prev.cpu().numpy()))

    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones((x.shape[0]))
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i

        e_t = model(x, timesteps[index].item() * s_in, **extra_args)

        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x

        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        noise = sigma_t * SAMPLING.torch.randn_like(x)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise

    return x


@torch.no_grad()
def plms(model, x, timesteps, extra_args=None, callback=None, disable=None):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(
        torch.float64 if x.device.type != "mps" and x.device.type != "xpu" else torch.float32
    )
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)

    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    old_eps = []

    def get_x_prev_and_pred_x0(e_t, index):
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x

        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()

        dir_xt = (1.0 - a_prev).sqrt() * e_t
        x_prev = a_prev.sqrt() * pred_x0 + dir_xt
        return x_prev, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        ts = timesteps[index].item() * s_in
        t_next = timesteps[max(index - 1, 0)].item() * s_in

        e_t = model(x, ts, **extra_args)

        if len(old_eps) == 0:
            x_prev, pred_x0 = get_x_prev_and_pred_x0(e_t, index)
            e_t_next = model(x_prev, t_next, **extra_args)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24

        x_prev, pred_x0 = get_x_prev_and_pred_x0(e_t_prime, index)

        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)

        x = x_prev

    return x


def get_timesteps(steps):
    """CompVisSampler.get_timesteps without discard_next_to_last_sigma (A1111's default)."""
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


class TimestepsCFG:
    """A1111's CFGDenoiserTimesteps over CompVisTimestepsDenoiser for one prompt per image: the
    batch is [cond..., uncond...], and the ε outputs mix as uncond + (cond - uncond) * scale."""

    def __init__(self, unet, alphas_cumprod):
        self.unet = unet
        self.inner_model = SimpleNamespace(inner_model=SimpleNamespace(alphas_cumprod=alphas_cumprod))

    def __call__(self, x, timesteps, cond, uncond, cond_scale, image_cond=None):
        x_in = torch.cat([x, x])
        t_in = torch.cat([timesteps, timesteps])
        x_out = self.unet(x_in, t_in, encoder_hidden_states=torch.cat([cond, uncond])).sample
        batch = x.shape[0]
        denoised_uncond = x_out[-batch:]
        denoised = torch.clone(denoised_uncond)
        for i in range(batch):
            denoised[i] += (x_out[i] - denoised_uncond[i]) * (1.0 * cond_scale)
        return denoised


# ---- modules/models/diffusion/uni_pc/uni_pc.py (transcribed: the paths A1111's defaults take,
# schedule 'discrete', predict_x0, variant bh1, skip type time_uniform, method multistep; the
# other branches of these functions dropped) ----------------------------------------------------


class NoiseScheduleVP:
    def __init__(self, schedule="discrete", alphas_cumprod=None):
        assert schedule == "discrete"
        self.schedule = schedule
        log_alphas = 0.5 * torch.log(alphas_cumprod)
        self.total_N = len(log_alphas)
        self.T = 1.0
        self.t_array = torch.linspace(0.0, 1.0, self.total_N + 1)[1:].reshape((1, -1))
        self.log_alpha_array = log_alphas.reshape((1, -1,))

    def marginal_log_mean_coeff(self, t):
        return interpolate_fn(t.reshape((-1, 1)), self.t_array.to(t.device), self.log_alpha_array.to(t.device)).reshape((-1))

    def marginal_alpha(self, t):
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean_coeff))
        return log_mean_coeff - log_std


class UniPC:
    def __init__(self, model_fn, noise_schedule, predict_x0=True, thresholding=False, max_val=1.0, variant="bh1"):
        self.model_fn_ = model_fn
        self.noise_schedule = noise_schedule
        self.variant = variant
        self.predict_x0 = predict_x0
        self.thresholding = thresholding
        self.max_val = max_val

    def noise_prediction_fn(self, x, t):
        return self.model(x, t)

    def data_prediction_fn(self, x, t):
        noise = self.noise_prediction_fn(x, t)
        dims = x.dim()
        alpha_t, sigma_t = self.noise_schedule.marginal_alpha(t), self.noise_schedule.marginal_std(t)
        x0 = (x - expand_dims(sigma_t, dims) * noise) / expand_dims(alpha_t, dims)
        assert not self.thresholding
        return x0

    def model_fn(self, x, t):
        if self.predict_x0:
            return self.data_prediction_fn(x, t)
        else:
            return self.noise_prediction_fn(x, t)

    def get_time_steps(self, skip_type, t_T, t_0, N, device):
        assert skip_type == "time_uniform"
        return torch.linspace(t_T, t_0, N + 1).to(device)

    def multistep_uni_pc_update(self, x, model_prev_list, t_prev_list, t, order, **kwargs):
        if len(t.shape) == 0:
            t = t.view(-1)
        assert "bh" in self.variant
        return self.multistep_uni_pc_bh_update(x, model_prev_list, t_prev_list, t, order, **kwargs)

    def multistep_uni_pc_bh_update(self, x, model_prev_list, t_prev_list, t, order, x_t=None, use_corrector=True):
        ns = self.noise_schedule
        assert order <= len(model_prev_list)
        dims = x.dim()

        # first compute rks
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.marginal_lambda(t_prev_0)
        lambda_t = ns.marginal_lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        log_alpha_prev_0, log_alpha_t = ns.marginal_log_mean_coeff(t_prev_0), ns.marginal_log_mean_coeff(t)
        alpha_t = torch.exp(log_alpha_t)

        h = lambda_t - lambda_prev_0

        rks = []
        D1s = []
        for i in range(1, order):
            t_prev_i = t_prev_list[-(i + 1)]
            model_prev_i = model_prev_list[-(i + 1)]
            lambda_prev_i = ns.marginal_lambda(t_prev_i)
            rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
            rks.append(rk)
            D1s.append((model_prev_i - model_prev_0) / rk)

        rks.append(1.0)
        rks = torch.tensor(rks, device=x.device)

        R = []
        b = []

        hh = -h[0] if self.predict_x0 else h[0]
        h_phi_1 = torch.expm1(hh)  # h*phi_1(h) = e^h - 1
        h_phi_k = h_phi_1 / hh - 1

        factorial_i = 1

        if self.variant == "bh1":
            B_h = hh
        elif self.variant == "bh2":
            B_h = torch.expm1(hh)
        else:
            raise NotImplementedError()

        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i

        R = torch.stack(R)
        b = torch.tensor(b, device=x.device)

        # now predictor
        use_predictor = len(D1s) > 0 and x_t is None
        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)  # (B, K)
            if x_t is None:
                # for order 2, we use a simplified version
                if order == 2:
                    rhos_p = torch.tensor([0.5], device=b.device)
                else:
                    rhos_p = torch.linalg.solve(R[:-1, :-1], b[:-1])
        else:
            D1s = None

        if use_corrector:
            # for order 1, we use a simplified version
            if order == 1:
                rhos_c = torch.tensor([0.5], device=b.device)
            else:
                rhos_c = torch.linalg.solve(R, b)

        model_t = None
        assert self.predict_x0
        x_t_ = expand_dims(sigma_t / sigma_prev_0, dims) * x - expand_dims(alpha_t * h_phi_1, dims) * model_prev_0

        if x_t is None:
            if use_predictor:
                pred_res = torch.einsum("k,bkchw->bchw", rhos_p, D1s)
            else:
                pred_res = 0
            x_t = x_t_ - expand_dims(alpha_t * B_h, dims) * pred_res

        if use_corrector:
            model_t = self.model_fn(x_t, t)
            if D1s is not None:
                corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], D1s)
            else:
                corr_res = 0
            D1_t = model_t - model_prev_0
            x_t = x_t_ - expand_dims(alpha_t * B_h, dims) * (corr_res + rhos_c[-1] * D1_t)
        return x_t, model_t

    def sample(self, x, steps=20, t_start=None, t_end=None, order=3, skip_type="time_uniform", method="singlestep", lower_order_final=True):
        t_0 = 1.0 / self.noise_schedule.total_N if t_end is None else t_end
        t_T = self.noise_schedule.T if t_start is None else t_start
        device = x.device
        assert method == "multistep"
        assert steps >= order, "UniPC order must be < sampling steps"
        timesteps = self.get_time_steps(skip_type=skip_type, t_T=t_T, t_0=t_0, N=steps, device=device)
        assert timesteps.shape[0] - 1 == steps
        with torch.no_grad():
            vec_t = timesteps[0].expand((x.shape[0]))
            model_prev_list = [self.model_fn(x, vec_t)]
            t_prev_list = [vec_t]
            # Init the first `order` values by lower order multistep DPM-Solver.
            for init_order in range(1, order):
                vec_t = timesteps[init_order].expand(x.shape[0])
                x, model_x = self.multistep_uni_pc_update(x, model_prev_list, t_prev_list, vec_t, init_order, use_corrector=True)
                if model_x is None:
                    model_x = self.model_fn(x, vec_t)
                model_prev_list.append(model_x)
                t_prev_list.append(vec_t)
            for step in range(order, steps + 1):
                vec_t = timesteps[step].expand(x.shape[0])
                if lower_order_final:
                    step_order = min(order, steps + 1 - step)
                else:
                    step_order = order
                if step == steps:
                    use_corrector = False
                else:
                    use_corrector = True
                x, model_x = self.multistep_uni_pc_update(x, model_prev_list, t_prev_list, vec_t, step_order, use_corrector=use_corrector)
                for i in range(order - 1):
                    t_prev_list[i] = t_prev_list[i + 1]
                    model_prev_list[i] = model_prev_list[i + 1]
                t_prev_list[-1] = vec_t
                # We do not need to evaluate the final model value.
                if step < steps:
                    if model_x is None:
                        model_x = self.model_fn(x, vec_t)
                    model_prev_list[-1] = model_x
        return x


def interpolate_fn(x, xp, yp):
    N, K = x.shape[0], xp.shape[1]
    all_x = torch.cat([x.unsqueeze(2), xp.unsqueeze(0).repeat((N, 1, 1))], dim=2)
    sorted_all_x, x_indices = torch.sort(all_x, dim=2)
    x_idx = torch.argmin(x_indices, dim=2)
    cand_start_idx = x_idx - 1
    start_idx = torch.where(
        torch.eq(x_idx, 0),
        torch.tensor(1, device=x.device),
        torch.where(
            torch.eq(x_idx, K),
            torch.tensor(K - 2, device=x.device),
            cand_start_idx,
        ),
    )
    end_idx = torch.where(torch.eq(start_idx, cand_start_idx), start_idx + 2, start_idx + 1)
    start_x = torch.gather(sorted_all_x, dim=2, index=start_idx.unsqueeze(2)).squeeze(2)
    end_x = torch.gather(sorted_all_x, dim=2, index=end_idx.unsqueeze(2)).squeeze(2)
    start_idx2 = torch.where(
        torch.eq(x_idx, 0),
        torch.tensor(0, device=x.device),
        torch.where(
            torch.eq(x_idx, K),
            torch.tensor(K - 2, device=x.device),
            cand_start_idx,
        ),
    )
    y_positions_expanded = yp.unsqueeze(0).expand(N, -1, -1)
    start_y = torch.gather(y_positions_expanded, dim=2, index=start_idx2.unsqueeze(2)).squeeze(2)
    end_y = torch.gather(y_positions_expanded, dim=2, index=(start_idx2 + 1).unsqueeze(2)).squeeze(2)
    cand = start_y + (x - start_x) * (end_y - start_y) / (end_x - start_x)
    return cand


def expand_dims(v, dims):
    return v[(...,) + (None,) * (dims - 1)]


# ---- modules/sd_samplers_timesteps_impl.py `UniPCCFG` and `unipc` (transcribed; A1111's default
# options: uni_pc_variant bh1, uni_pc_skip_type time_uniform, uni_pc_order 3,
# uni_pc_lower_order_final True; no callback) -------------------------------------------------


class UniPCCFG(UniPC):
    def __init__(self, cfg_model, extra_args, *args, **kwargs):
        super().__init__(None, *args, **kwargs)
        self.cfg_model = cfg_model
        self.extra_args = extra_args

    def get_model_input_time(self, t_continuous):
        return (t_continuous - 1.0 / self.noise_schedule.total_N) * 1000.0

    def model(self, x, t):
        t_input = self.get_model_input_time(t)

        res = self.cfg_model(x, t_input, **self.extra_args)

        return res


def unipc(model, x, timesteps, extra_args=None, callback=None, disable=None, is_img2img=False):
    alphas_cumprod = model.inner_model.inner_model.alphas_cumprod

    ns = NoiseScheduleVP("discrete", alphas_cumprod=alphas_cumprod)
    t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else None
    unipc_sampler = UniPCCFG(model, extra_args, ns, predict_x0=True, thresholding=False, variant="bh1")
    x = unipc_sampler.sample(x, steps=len(timesteps), t_start=t_start, skip_type="time_uniform", method="multistep", order=3, lower_order_final=True)

    return x


# ---- modules/sd_samplers_lcm.py (transcribed) -----------------------------------------------


class LCMCompVisDenoiser(EXTERNAL.DiscreteEpsDDPMDenoiser):
    def __init__(self, model):
        timesteps = 1000
        original_timesteps = 50  # LCM Original Timesteps (default=50, for current version of LCM)
        self.skip_steps = timesteps // original_timesteps

        alphas_cumprod_valid = torch.zeros((original_timesteps), dtype=torch.float32, device=model.device)
        for x in range(original_timesteps):
            alphas_cumprod_valid[original_timesteps - 1 - x] = model.alphas_cumprod[timesteps - 1 - x * self.skip_steps]

        super().__init__(model, alphas_cumprod_valid, quantize=None)

    def get_sigmas(self, n=None):
        if n is None:
            return SAMPLING.append_zero(self.sigmas.flip(0))

        start = self.sigma_to_t(self.sigma_max)
        end = self.sigma_to_t(self.sigma_min)

        t = torch.linspace(start, end, n, device="cpu")

        return SAMPLING.append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma, quantize=None):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, timestep):
        t = torch.clamp(((timestep - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=(len(self.sigmas) - 1))
        return super().t_to_sigma(t)

    def get_eps(self, *args, **kwargs):
        return self.inner_model.apply_model(*args, **kwargs)

    def get_scaled_out(self, sigma, output, input):
        sigma_data = 0.5
        scaled_timestep = EXTERNAL.utils.append_dims(self.sigma_to_t(sigma), output.ndim) * 10.0

        c_skip = sigma_data**2 / (scaled_timestep**2 + sigma_data**2)
        c_out = scaled_timestep / (scaled_timestep**2 + sigma_data**2) ** 0.5

        return c_out * output + c_skip * input

    def forward(self, input, sigma, **kwargs):
        c_out, c_in = [EXTERNAL.utils.append_dims(x, input.ndim) for x in self.get_scalings(sigma)]
        eps = self.get_eps(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return self.get_scaled_out(sigma, input + eps * c_out, input)


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = SAMPLING.default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])

    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)

        x = denoised
        if sigmas[i + 1] > 0:
            x += sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


# ---- the runs --------------------------------------------------------------------------------

# (key, sampler, schedule type or None, seeds): tiny-sd txt2img through the CLI.
RUNS = [
    ("Euler a/KL Optimal", "Euler a", "KL Optimal", [21]),
    ("DPM++ 2M/Align Your Steps", "DPM++ 2M", "Align Your Steps", [22]),
    ("Euler/Simple", "Euler", "Simple", [23]),
    ("Heun/Normal", "Heun", "Normal", [24]),
    ("LMS/DDIM", "LMS", "DDIM", [25]),
    ("DPM++ 2M/Beta", "DPM++ 2M", "Beta", [26]),
    ("DDIM", "DDIM", None, [27]),
    ("PLMS", "PLMS", None, [28]),
    ("UniPC", "UniPC", None, [33]),
    ("LCM/automatic", "LCM", None, [29]),
    ("LCM/Karras", "LCM", "Karras", [30]),
    ("DDIM/seeds31_32", "DDIM", None, [31, 32]),
]


class UNetOnCpu(A.UNetAsLdm):
    """The LDM interface A1111's LCM wrapper reads (alphas_cumprod, device, apply_model)."""

    device = torch.device("cpu")


def run(pipe, ldm, sampler, schedule, seeds):
    side = SIZE // pipe.vae_scale_factor
    shape = (4, side, side)
    cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE_PROMPT)
    batch = len(seeds)
    cond, uncond = cond.repeat(batch, 1, 1), uncond.repeat(batch, 1, 1)
    rng = A.ImageRng(shape, seeds, "cpu")
    noise = rng.next()
    extra_args = {"cond": cond, "uncond": uncond, "cond_scale": GUIDANCE_SCALE}
    sigmas = None
    SAMPLING.torch = A.TorchHijack(rng)
    try:
        if sampler in ("DDIM", "PLMS", "UniPC"):
            # CompVisSampler.sample: x is the noise itself.
            function = {"DDIM": ddim, "PLMS": plms, "UniPC": unipc}[sampler]
            model = TimestepsCFG(pipe.unet, ldm.alphas_cumprod)
            latents = function(model, noise, get_timesteps(STEPS), extra_args=extra_args, disable=True)
        elif sampler == "LCM":
            wrap = LCMCompVisDenoiser(ldm)
            sigmas = get_sigmas(wrap, sampler, schedule, STEPS)
            latents = sample_lcm(A.CFGDenoiser(wrap), noise * sigmas[0], sigmas, extra_args=extra_args, disable=True)
        else:
            wrap = EXTERNAL.CompVisDenoiser(ldm, quantize=False)
            sigmas = k_sampler_sigmas(wrap, sampler, schedule, STEPS)
            function = getattr(SAMPLING, A.A1111_SAMPLERS[sampler][0])
            latents = function(A.CFGDenoiser(wrap), noise * sigmas[0], sigmas, extra_args=extra_args, disable=True)
    finally:
        SAMPLING.torch = torch
    decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    images = pipe.image_processor.postprocess(decoded, output_type="pil")
    return latents, images, sigmas


def write_goldens(fixtures_dir, goldens_dir):
    pipe = load_pipeline(StableDiffusionPipeline, os.path.join(fixtures_dir, "tiny-sd"))
    ldm = UNetOnCpu(pipe.unet, A.ldm_alphas_cumprod(pipe.scheduler.config))
    out_dir = os.path.join(goldens_dir, "tiny-sd")
    tensors = {}
    entries = {}
    with torch.no_grad():
        for key, sampler, schedule, seeds in RUNS:
            latents, images, sigmas = run(pipe, ldm, sampler, schedule, seeds)
            stem = "a1111x_" + key.replace("/", "_").replace(" ", "_").replace("+", "p")
            pngs = [f"{stem}.png"] if len(images) == 1 else [f"{stem}_{i}.png" for i in range(len(images))]
            for image, png in zip(images, pngs):
                save_png(image, os.path.join(out_dir, png))
            tensors[f"{key}/latents"] = latents
            entries[key] = {
                "sampler": sampler,
                "schedule_type": schedule,
                "seeds": seeds,
                "rng": "cpu",
                "sigmas": None if sigmas is None else [float(s) for s in sigmas],
                "latents": tensor_stats(latents),
                "pngs": pngs,
            }
        wrap = EXTERNAL.CompVisDenoiser(ldm, quantize=False)
        for sampler in ("Euler", "DPM2"):
            for schedule in NEW_SCHEDULE_TYPES:
                for steps in SCHEDULE_STEPS:
                    sigmas = k_sampler_sigmas(wrap, sampler, schedule, steps)
                    tensors[f"schedule/{sampler}/{schedule}/{steps}/sigmas"] = sigmas
        lcm = LCMCompVisDenoiser(ldm)
        for schedule in (None, "Karras", "Exponential", "KL Optimal", "Align Your Steps", "Simple", "DDIM", "Beta"):
            for steps in SCHEDULE_STEPS:
                sigmas = get_sigmas(lcm, "LCM", schedule, steps)
                name = f"lcm/{schedule or 'automatic'}/{steps}"
                tensors[f"{name}/sigmas"] = sigmas
                tensors[f"{name}/timesteps"] = lcm.sigma_to_t(sigmas[:-1]).float()
        for steps in SCHEDULE_STEPS[1:]:
            tensors[f"timesteps/{steps}"] = get_timesteps(steps).float()
    write_tensors(os.path.join(out_dir, "a1111_exact.safetensors"), tensors)
    write_json(
        os.path.join(goldens_dir, "a1111_exact.json"),
        {
            "description": "AUTOMATIC1111's own samplers (DDIM, PLMS, UniPC, LCM) and its schedule types KL Optimal, "
            "Align Your Steps, Simple, Normal, DDIM and Beta, transcribed from A1111 1.10's sources with "
            "k-diffusion (tools/requirements.txt); see tools/fixturegen/a1111_exact.py for what is transcribed "
            f"from where. tiny-sd txt2img {SIZE}x{SIZE}, {STEPS} steps, CFG {GUIDANCE_SCALE}, prompt {PROMPT!r}, "
            f"negative prompt {NEGATIVE_PROMPT!r} (diffusers' plain prompt encoding), f32 on CPU, one CPU "
            "generator per image. tiny-sd/a1111_exact.safetensors holds '<run>/latents' (final latents before "
            "decoding), 'schedule/<Euler|DPM2>/<schedule type>/<steps>/sigmas' (A1111's get_sigmas; DPM2 "
            "discards the next-to-last sigma), 'lcm/<schedule type or automatic>/<steps>/sigmas' and "
            "'.../timesteps' (A1111's LCM wrapper), and 'timesteps/<steps>' (the DDIM/PLMS timesteps).",
            "runs": {"tiny-sd": entries},
        },
    )
