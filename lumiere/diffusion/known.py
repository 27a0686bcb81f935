"""Known-pixel replacement (RePaint-style, Lugmayr et al. 2022) for the <C, M> tasks, as a denoiser wrapper.

The network sees <J, C, M> and *learns* to keep the known pixels (M = 1); replacement *enforces* it. At every
model call, in the variance-exploding coordinates the samplers step in (x = x0 + s * noise):

    x_in = M * (C + s * noise) + (1 - M) * x        the known pixels put back at the current noise level s
    D'   = M * C + (1 - M) * D(x_in, s)              the denoised estimate agrees with C there

and after the last step the output is composited exactly: out = M * C + (1 - M) * out, so where M = 1 the output
*is* C, bit for bit. A soft mask (0 < M < 1) blends the two in proportion; it is never thresholded.

`noise` is fixed for the whole run: the sampler's own initial noise (`samplers.seeded_noise`, same seed), so at
the first step the known pixels are exactly where the sampler would have started from C, and along the
deterministic samplers (DDIM, Euler, DPM++ 2M) they follow the ODE path of C itself instead of being re-noised
differently at each step. This is what core ComfyUI does for a LATENT with a "noise_mask" (KSamplerX0Inpaint,
with the mask's convention flipped: there 1 = generate).
"""
from __future__ import annotations

import torch


def composite_known(x: torch.Tensor, C: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """M * C + (1 - M) * x: exactly C where M = 1, x where M = 0, a blend in between.  # all broadcast to x"""
    M = M.to(x.dtype)
    return M * C.to(x.dtype) + (1 - M) * x


class ReplaceKnown:
    """Wraps a denoiser D(x, s) -> x0 (k-diffusion style) so that the known pixels (M = 1) follow C.

    `C` (b, 3, t, h, w): the known video; only its values where M > 0 are used (pass the video itself, not C * M,
    when M is soft). `M` (b or 1, 1, t, h, w) in 0..1, 1 = known. `noise`: the sampler's initial noise.
    Extra keyword arguments (e.g. MultiDiffusion's `cond`) pass through to the wrapped denoiser.
    """

    def __init__(self, denoiser, C: torch.Tensor, M: torch.Tensor, noise: torch.Tensor):
        if M.ndim != 5 or M.shape[1] != 1:
            raise ValueError(f"M: expected a mask of shape (b, 1, t, h, w), got {tuple(M.shape)}")
        if C.shape[2:] != M.shape[2:] or noise.shape[2:] != M.shape[2:]:
            raise ValueError(f"replace_known: C {tuple(C.shape)}, M {tuple(M.shape)} and the noise "
                             f"{tuple(noise.shape)} must have the same frames and size")
        if float(M.min()) < 0 or float(M.max()) > 1:
            raise ValueError(f"M: expected values in 0..1 (1 = known), got {float(M.min())}..{float(M.max())}")
        self.denoiser, self.C, self.M, self.noise = denoiser, C, M, noise

    def noised_known(self, s: torch.Tensor) -> torch.Tensor:
        """C at noise level s (scalar or (b,)): C + s * noise."""
        s = torch.as_tensor(s, dtype=self.noise.dtype, device=self.noise.device).reshape(-1)
        return self.C + s.view(-1, *[1] * (self.noise.ndim - 1)) * self.noise

    def __call__(self, x: torch.Tensor, s: torch.Tensor, **kw) -> torch.Tensor:
        x_in = composite_known(x, self.noised_known(s), self.M)
        return composite_known(self.denoiser(x_in, s, **kw), self.C, self.M)
