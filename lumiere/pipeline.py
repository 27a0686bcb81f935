"""Prompt -> conditioning -> sampler -> frames (-> SSR): the one code path shared by the CLI, eval and tests."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checkpoint import LumiereBundle
from .diffusion.denoiser import Denoiser
from .diffusion.known import ReplaceKnown, composite_known
from .diffusion.samplers import get_sigmas, sample, sdedit_sigmas, seeded_noise
from .models.stunet import STUNet
from .multidiffusion import MultiDiffusionDenoiser

# Where the SSR starts by default (`upscale(denoise=...)`, the ComfyUI SSR node and workflows, the eval): chosen by
# PSNR against the true high-res clips with the shipped SSR (lumiere.eval, ssr.psnr_by_denoise). On 12 held-out
# clips: denoise 1.0 / 0.7 / 0.5 / 0.3 -> 32.44 / 32.48 / 32.58 / 32.69 dB (bicubic 33.04 dB).
SSR_DENOISE = 0.3


class FramewiseT2I(nn.Module):
    """A T2I U-Net applied to each frame independently: the per-frame baseline without temporal layers."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x, timestep, context):  # (b, c, t, h, w) -> (b, 3, t, h, w)
        b, _, t = x.shape[:3]
        y = self.unet(rearrange(x, "b c t h w -> (b t) c h w"), timestep.repeat_interleave(t),
                      context.repeat_interleave(t, dim=0))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


def video_net(model: nn.Module) -> nn.Module:
    return model if isinstance(model, STUNet) else FramewiseT2I(model)


def encode_text(bundle: LumiereBundle, prompt: str | list[str], negative: str = "",
                context: torch.Tensor | None = None, uncond_context: torch.Tensor | None = None):
    """Text -> (context, uncond_context). External-embedding models take `context` directly."""
    if context is not None:
        return context, uncond_context if uncond_context is not None else torch.zeros_like(context)
    if bundle.text_encoder is None:
        raise ValueError("prompt: this model takes external text embeddings (text.kind='external'); pass context")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    with torch.no_grad():
        return bundle.text_encoder.encode(prompts), bundle.text_encoder.encode([negative] * len(prompts))


def upsample_video(video: torch.Tensor, scale: int) -> torch.Tensor:
    """Bilinear spatial up-sampling of (b, c, t, h, w) frames (the SSR's conditioning)."""
    b, c, t, h, w = video.shape
    return F.interpolate(video, size=(t, h * scale, w * scale), mode="trilinear", align_corners=False)


@torch.no_grad()
def generate(bundle: LumiereBundle, prompt: str | list[str], *, num_frames: int | None = None,
             height: int | None = None, width: int | None = None, steps: int = 25, cfg: float = 4.0,
             seed: int = 0, sampler: str = "ddim", scheduler: str = "uniform", negative: str = "",
             C: torch.Tensor | None = None, M: torch.Tensor | None = None,
             init_video: torch.Tensor | None = None, strength: float = 1.0, replace_known: bool = False,
             context: torch.Tensor | None = None, uncond_context: torch.Tensor | None = None,
             callback: Callable | None = None, disable: bool = True) -> torch.Tensor:
    """Text (+ <C, M>) to video, or SDEdit video-to-video with `init_video` and `strength`.

    `replace_known` (needs C and M): known-pixel replacement (`diffusion.known.ReplaceKnown`): at every step the
    known pixels (M = 1) are put back as C noised to the current level, and the output is composited exactly,
    out = M * C + (1 - M) * out, so they equal C bit for bit; a soft M (0..1) blends. Off by default, so that
    what the model itself does with <C, M> stays measurable (lumiere.eval reports both).

    Returns (b, 3, t, h, w) in -1..1. All frames are denoised together in one pass.
    """
    cfgm = bundle.config
    if replace_known and (C is None or M is None):
        raise ValueError("replace_known: needs the conditioning C and M (1 = known)")
    ctx, uctx = encode_text(bundle, prompt, negative, context, uncond_context)
    b = ctx.shape[0]
    if init_video is not None:
        b, _, num_frames, height, width = init_video.shape
    t, h, w = num_frames or cfgm.num_frames, height or cfgm.resolution, width or cfgm.resolution
    net = video_net(bundle.model)
    if isinstance(net, STUNet):
        net.check_num_frames(t)
    cond = None
    if cfgm.conditioning == "jcm":
        if C is None:
            C, M = torch.zeros(b, 3, t, h, w), torch.zeros(b, 1, t, h, w)
        if C.shape[2:] != (t, h, w) or M.shape[2:] != (t, h, w):
            raise ValueError(f"conditioning: C {tuple(C.shape)} / M {tuple(M.shape)} must have {t} frames of "
                             f"{h}x{w}")
        cond = torch.cat([C * M, M], dim=1).expand(b, -1, -1, -1, -1)
    elif C is not None:
        raise ValueError(f"conditioning: this model ({cfgm.role}) takes no <C, M> input")
    denoiser = Denoiser(net, ctx, uctx, cond, cfg)
    sigmas = get_sigmas(scheduler, steps, cfgm.sigma_min, cfgm.sigma_max)
    if init_video is not None:
        sigmas = sdedit_sigmas(sigmas, strength)
    shape = (b, 3, t, h, w)
    if replace_known:
        denoiser = ReplaceKnown(denoiser, C, M, seeded_noise(shape, seed))
    out = sample(denoiser, shape, sigmas, sampler, seed, init=init_video, callback=callback,
                 disable=disable).clamp(-1, 1)
    return composite_known(out, C, M) if replace_known else out


@torch.no_grad()
def upscale(bundle: LumiereBundle, video: torch.Tensor, prompt: str | list[str], *, window: int | None = None,
            overlap: int = 2, fuse: str = "flat", tile: int | None = None, steps: int = 20, cfg: float = 1.0,
            seed: int = 0, sampler: str = "ddim", scheduler: str = "uniform", negative: str = "",
            denoise: float = SSR_DENOISE, callback: Callable | None = None, disable: bool = True) -> torch.Tensor:
    """Spatial super-resolution of a low-res clip (b, 3, t, h, w) with temporal MultiDiffusion over windows.

    `denoise` in (0, 1] (as core samplers' denoise): 1 starts from pure noise; below 1 the sampler starts from the
    bilinearly up-sampled clip noised to an intermediate level and runs the last `denoise` fraction of the
    schedule (SDEdit: `sdedit_sigmas`), so the result stays closer to the up-sampled input.
    """
    cfgm = bundle.config
    if cfgm.conditioning != "lowres":
        raise ValueError(f"model: expected an SSR checkpoint (role 'ssr'), got role {cfgm.role!r}")
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video: expected shape (b, 3, t, h, w), got {tuple(video.shape)}")
    lowres = upsample_video(video, cfgm.scale)
    b, _, t, h, w = lowres.shape
    ctx, uctx = encode_text(bundle, prompt, negative)
    ctx, uctx = ctx.expand(b, -1, -1), uctx.expand(b, -1, -1)
    window = window or cfgm.num_frames
    net = bundle.model
    if isinstance(net, STUNet):
        net.check_num_frames(min(window, t))
    denoiser = MultiDiffusionDenoiser(Denoiser(net, ctx, uctx, None, cfg), window, overlap, fuse, tile=tile,
                                      cond=lowres)
    sigmas = get_sigmas(scheduler, steps, cfgm.sigma_min, cfgm.sigma_max)
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise: expected a value in (0, 1], got {denoise}")
    init = None
    if denoise < 1.0:
        sigmas, init = sdedit_sigmas(sigmas, denoise), lowres
    return sample(denoiser, (b, 3, t, h, w), sigmas, sampler, seed, init=init, callback=callback,
                  disable=disable).clamp(-1, 1)
