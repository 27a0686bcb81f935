"""The diffusion process: a continuous cosine schedule with v-prediction (as ImagenVideo).

Three equivalent coordinates for the noise level, all used below:
  t in (0, 1)             what the network is given;   alpha = cos(pi t / 2), sigma = sin(pi t / 2)
  x_t = alpha x0 + sigma eps                           (variance preserving; the network's input)
  s = sigma / alpha = tan(pi t / 2)                    (variance exploding, k-diffusion's sigma; samplers step in s)
The network predicts v = alpha eps - sigma x0, so x0 = alpha x_t - sigma v and eps = sigma x_t + alpha v.
ComfyUI's ModelSamplingContinuousV uses exactly this (t = atan(s) 2 / pi).
"""
from __future__ import annotations

import math

import torch


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def t_to_vesigma(t: torch.Tensor) -> torch.Tensor:
    return torch.tan(t * math.pi / 2)


def vesigma_to_t(s: torch.Tensor) -> torch.Tensor:
    return torch.atan(s) * 2 / math.pi


def t_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    return math.atan(sigma_min) * 2 / math.pi, math.atan(sigma_max) * 2 / math.pi


def sample_t(n: int, sigma_min: float, sigma_max: float, generator: torch.Generator | None = None,
             power: float = 1.0, device=None) -> torch.Tensor:
    """Training noise levels: t = t_min + (t_max - t_min) u^power; power < 1 favours high noise."""
    lo, hi = t_range(sigma_min, sigma_max)
    u = torch.rand(n, generator=generator, device=device)
    return lo + (hi - lo) * u.pow(power)


def add_noise(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    a, s = (v.view(-1, *[1] * (x0.ndim - 1)) for v in alpha_sigma(t))
    return a * x0 + s * noise


def v_target(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    a, s = (v.view(-1, *[1] * (x0.ndim - 1)) for v in alpha_sigma(t))
    return a * noise - s * x0


def v_loss(model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor | None,
           context: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error on v. `cond` (extra input channels: C and M, or the low-res video) is concatenated."""
    x_t = add_noise(x0, t, noise)
    inp = x_t if cond is None else torch.cat([x_t, cond], dim=1)
    err = (model(inp, t, context).float() - v_target(x0, t, noise).float()) ** 2
    if loss_mask is not None:
        return (err * loss_mask).sum() / (loss_mask.sum() * err.shape[1] / loss_mask.shape[1]).clamp(min=1)
    return err.mean()
