"""A v-prediction network seen as a k-diffusion denoiser D(x, s) -> x0, with classifier-free guidance."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .schedule import alpha_sigma, vesigma_to_t


@dataclass
class Denoiser:
    """D(x, s): x = x0 + s * eps (variance exploding) -> x0.

    `cond`: the extra input channels (C and M, or the up-sampled low-res video), (b, k, t, h, w) or None.
    `context` / `uncond_context`: text tokens (b, m, d); with `cfg_scale` != 1 both are run in one batch.
    """

    net: nn.Module
    context: torch.Tensor
    uncond_context: torch.Tensor | None = None
    cond: torch.Tensor | None = None
    cfg_scale: float = 1.0

    def __call__(self, x: torch.Tensor, s: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # x (b, 3, ...), s scalar or (b,); `cond` overrides self.cond (MultiDiffusion passes a window's slice)
        cond = self.cond if cond is None else cond
        b = x.shape[0]
        s = torch.as_tensor(s, dtype=torch.float32, device=x.device).reshape(-1).expand(b)
        t = vesigma_to_t(s)
        alpha, sigma = (v.view(-1, *[1] * (x.ndim - 1)) for v in alpha_sigma(t))
        x_t = x * alpha  # = x / sqrt(1 + s^2): the variance-preserving input
        inp = x_t if cond is None else torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        guided = self.uncond_context is not None and self.cfg_scale != 1.0
        if guided:
            inp, t2 = torch.cat([inp, inp]), torch.cat([t, t])
            ctx = torch.cat([self.context, self.uncond_context])
            v = self.net(inp, t2, ctx).float()
            v_c, v_u = v.chunk(2)
            x0_c, x0_u = (alpha * x_t - sigma * vv for vv in (v_c, v_u))
            return x0_u + self.cfg_scale * (x0_c - x0_u)
        v = self.net(inp, t, self.context).float()
        return alpha * x_t - sigma * v
