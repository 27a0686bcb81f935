"""Samplers as small functions over a denoiser D(x, s) -> x0 (k-diffusion style, variance-exploding s).

Each has the signature `sample_x(model, x, sigmas, callback=None, generator=None, disable=True)`; `x` starts
as `sigmas[0] * noise`. `callback({"i", "x", "sigma", "denoised"})` per step is how progress, previews and
Cancel attach from outside.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import trange

from .schedule import t_to_vesigma


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Noise levels of Karras et al. (2022), Eq. 5, then a final 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def uniform_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Noise levels evenly spaced in the cosine time t (DDIM's spacing), then a final 0."""
    lo, hi = math.atan(sigma_min) * 2 / math.pi, math.atan(sigma_max) * 2 / math.pi
    t = torch.linspace(hi, lo, n, dtype=torch.float64)
    return torch.cat([t_to_vesigma(t), t.new_zeros(1)]).float()


def trailing_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n noise levels evenly spaced in the cosine time t from sigma_max down, ending one spacing above 0, then 0
    ("trailing" spacing): every one of the n calls denoises, none is spent at sigma_min. The grid a distilled
    few-step model is trained on (`lumiere.train` stage distill); `sigma_min` only sets the spacing."""
    lo, hi = math.atan(sigma_min) * 2 / math.pi, math.atan(sigma_max) * 2 / math.pi
    t = torch.linspace(hi, lo, n + 1, dtype=torch.float64)[:-1]
    return torch.cat([t_to_vesigma(t), t.new_zeros(1)]).float()


SCHEDULES = {"karras": karras_sigmas, "uniform": uniform_sigmas, "trailing": trailing_sigmas}


def get_sigmas(schedule: str, steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    if schedule not in SCHEDULES:
        raise ValueError(f"scheduler: expected one of {sorted(SCHEDULES)}, got {schedule!r}")
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    return SCHEDULES[schedule](steps, sigma_min, sigma_max)


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Denoiser output -> the probability-flow ODE derivative dx/ds."""
    return (x - denoised) / sigma


def _step_callback(callback, i, x, sigma, denoised):
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})


@torch.no_grad()
def sample_euler(model, x, sigmas, callback=None, generator=None, disable=True):
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn)."""
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i])
        _step_callback(callback, i, x, sigmas[i], denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_ddim(model, x, sigmas, callback=None, generator=None, disable=True, eta=0.0):
    """DDIM (Song et al. 2021) with `eta`, written in s: eta = 0 is deterministic, eta = 1 is ancestral (DDPM)."""
    for i in trange(len(sigmas) - 1, disable=disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        _step_callback(callback, i, x, s, denoised)
        if s_next == 0:
            x = denoised
            continue
        s_up = min(s_next, eta * (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
        s_down = (s_next ** 2 - s_up ** 2) ** 0.5
        x = denoised + to_d(x, s, denoised) * s_down
        if eta > 0:
            x = x + torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) * s_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, callback=None, generator=None, disable=True):
    """DPM-Solver++(2M) (Lu et al. 2022), as in k-diffusion."""
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i])
        _step_callback(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
            h = t_next - t
            if old_denoised is None:
                d = denoised
            else:
                r = (t - (-sigmas[i - 1].log())) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * d
        old_denoised = denoised
    return x


SAMPLERS = {"ddim": sample_ddim, "euler": sample_euler, "dpmpp_2m": sample_dpmpp_2m}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {sorted(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name]


def seeded_noise(shape, seed: int = 0, device="cpu") -> torch.Tensor:
    """The initial noise `sample` draws for `seed`: the same tensor, for code that needs it outside the sampler
    (known-pixel replacement noises the known pixels with it)."""
    return torch.randn(shape, generator=torch.Generator(device).manual_seed(seed), device=device)


def sample(model, shape, sigmas, sampler: str = "ddim", seed: int = 0, init: torch.Tensor | None = None,
           callback=None, disable=True, device="cpu", **kw) -> torch.Tensor:
    """Draw noise from `seed` and run a sampler. With `init` (SDEdit), start from init + sigmas[0] * noise.

    Same seed and inputs give bitwise-identical output on CPU.
    """
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn(shape, generator=generator, device=device)  # = seeded_noise(shape, seed, device)
    x = noise * sigmas[0] if init is None else init + noise * sigmas[0]
    return get_sampler(sampler)(model, x, sigmas.to(device), callback=callback, generator=generator,
                                disable=disable, **kw)


def sdedit_sigmas(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): keep the last `strength` fraction of the schedule (strength 1 = from noise)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength: expected a value in (0, 1], got {strength}")
    steps = len(sigmas) - 1
    keep = max(1, round(steps * strength))
    return sigmas[steps - keep:]
