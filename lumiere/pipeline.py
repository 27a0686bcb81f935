"""Prompt -> conditioning -> sampler -> frames (-> SSR): the one code path shared by the CLI, eval and tests."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import conditioning as recipes
from .checkpoint import LumiereBundle
from .configs import ModelConfig
from .diffusion.denoiser import Denoiser
from .diffusion.known import ReplaceKnown, composite_known
from .diffusion.samplers import get_sigmas, sample, sdedit_sigmas, seeded_noise
from .models.stunet import STUNet
from .multidiffusion import DEFAULT_FUSE, MultiDiffusionDenoiser, resolve_window

# Where the SSR starts by default (`upscale(denoise=...)`, the ComfyUI SSR node and workflows, the eval), by PSNR
# against the true high-res clips (lumiere.eval, ssr.psnr_by_denoise). The first demo SSR, 12 held-out clips:
# denoise 1.0 / 0.7 / 0.5 / 0.3 -> 32.44 / 32.48 / 32.58 / 32.69 dB (bicubic 33.04). The shipped (longer trained)
# SSR, 8 clips: 34.89 / 34.72 / 34.63 / 34.44 dB (bicubic 33.04): 1.0 is now best by 0.45 dB; 0.3 is kept (closest
# to the input, a third of the steps in the library, and the workflows' value).
SSR_DENOISE = 0.3

# How a model is sampled when neither the caller nor the model's checkpoint (`ModelConfig.sampling`) says: the
# teachers' settings. A distilled model records its own (few steps, cfg 1, the grid it was trained on).
BASE_SAMPLING = {"steps": 25, "cfg": 4.0, "sampler": "ddim", "scheduler": "uniform"}
SSR_SAMPLING = {"steps": 20, "cfg": 1.0, "sampler": "ddim", "scheduler": "uniform", "denoise": SSR_DENOISE}


def sampling_defaults(config: ModelConfig) -> dict:
    """The model's default steps, cfg, sampler, scheduler (and an SSR's denoise): what its checkpoint records in
    `sampling` (a distilled model), else BASE_SAMPLING / SSR_SAMPLING."""
    base = SSR_SAMPLING if config.role == "ssr" else BASE_SAMPLING
    return {**base, **{k: v for k, v in config.sampling.items() if k in base}}


def sampling_settings(config: ModelConfig, **given) -> dict:
    """The given steps / cfg / sampler / scheduler (/ denoise), each None replaced by the model's default
    (`sampling_defaults`)."""
    defaults = sampling_defaults(config)
    return {key: defaults[key] if value is None else value for key, value in given.items()}


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


# the SSR's one low-res recipe, shared by training, eval and sampling (train/test parity depends on it): a clip is
# area down-sampled by `scale` to make the low-res input, which is bilinearly up-sampled back as the conditioning
def downsample_video(video: torch.Tensor, scale: int) -> torch.Tensor:
    """Area down-sampling of (b, c, t, h, w) frames by `scale` (how the SSR's low-res inputs are made)."""
    b, c, t, h, w = video.shape
    return F.interpolate(video, size=(t, h // scale, w // scale), mode="area")


def upsample_video(video: torch.Tensor, scale: int) -> torch.Tensor:
    """Bilinear spatial up-sampling of (b, c, t, h, w) frames (the SSR's conditioning)."""
    b, c, t, h, w = video.shape
    return F.interpolate(video, size=(t, h * scale, w * scale), mode="trilinear", align_corners=False)


def ssr_conditioning(hi: torch.Tensor, scale: int) -> torch.Tensor:
    """The conditioning the SSR is trained with for a high-res clip: down-sampled, then up-sampled back."""
    return upsample_video(downsample_video(hi, scale), scale)


def model_device(bundle: LumiereBundle) -> torch.device:
    """Where the network's weights are: every tensor of a sampling run is made there."""
    return next(bundle.model.parameters()).device


def jcm_cond(bundle: LumiereBundle, C: torch.Tensor | None, M: torch.Tensor | None, shape: tuple[int, int, int, int],
             device) -> torch.Tensor | None:
    """The extra input channels <C * M, M> of a jcm model (zeros without conditioning), or None.  # (b, 4, t, h, w)"""
    b, t, h, w = shape
    cfgm = bundle.config
    if cfgm.conditioning != "jcm":
        if C is not None:
            raise ValueError(f"conditioning: this model ({cfgm.role}) takes no <C, M> input")
        return None
    if C is None:
        C, M = torch.zeros(b, 3, t, h, w, device=device), torch.zeros(b, 1, t, h, w, device=device)
    if C.shape[2:] != (t, h, w) or M.shape[2:] != (t, h, w):
        raise ValueError(f"conditioning: C {tuple(C.shape)} / M {tuple(M.shape)} must have {t} frames of {h}x{w}")
    return recipes.pack(C, M).expand(b, -1, -1, -1, -1)


def check_replace_known(replace_known: bool, C, M) -> None:
    if replace_known and (C is None or M is None):
        raise ValueError("replace_known: needs the conditioning C and M (1 = known)")


def sample_video(config: ModelConfig, denoiser, shape: tuple[int, ...], settings: dict, seed: int, device, *,
                 init: torch.Tensor | None = None, strength: float = 1.0, C: torch.Tensor | None = None,
                 M: torch.Tensor | None = None, replace_known: bool = False, callback: Callable | None = None,
                 disable: bool = True) -> torch.Tensor:
    """The sampling under `generate`, `generate_long` and `upscale` (and so `generate_extended`), whatever the
    denoiser (one pass, or MultiDiffusion windows): the model's noise schedule for settings["scheduler"] /
    ["steps"]; SDEdit when `init` is given (`init` noised to the level where the last `strength` of the schedule
    starts, then that part run); known-pixel replacement (`ReplaceKnown` at every step, composited exactly at the
    end: the pixels where M = 1 equal C bit for bit, a soft M blends); the result clamped to -1..1.
    -> (b, 3, t, h, w) = `shape`"""
    check_replace_known(replace_known, C, M)
    sigmas = get_sigmas(settings["scheduler"], settings["steps"], config.sigma_min, config.sigma_max)
    if init is not None:
        sigmas = sdedit_sigmas(sigmas, strength)
    if replace_known:
        denoiser = ReplaceKnown(denoiser, C, M, seeded_noise(shape, seed, device))
    out = sample(denoiser, shape, sigmas, settings["sampler"], seed, init=init, callback=callback, disable=disable,
                 device=device).clamp(-1, 1)
    return composite_known(out, C, M) if replace_known else out


@torch.no_grad()
def generate(bundle: LumiereBundle, prompt: str | list[str], *, num_frames: int | None = None,
             height: int | None = None, width: int | None = None, steps: int | None = None,
             cfg: float | None = None, seed: int = 0, sampler: str | None = None, scheduler: str | None = None,
             negative: str = "",
             C: torch.Tensor | None = None, M: torch.Tensor | None = None,
             init_video: torch.Tensor | None = None, strength: float = 1.0, replace_known: bool = False,
             context: torch.Tensor | None = None, uncond_context: torch.Tensor | None = None,
             callback: Callable | None = None, disable: bool = True) -> torch.Tensor:
    """Text (+ <C, M>) to video, or SDEdit video-to-video with `init_video` and `strength`.

    `replace_known` (needs C and M): known-pixel replacement (`diffusion.known.ReplaceKnown`): at every step the
    known pixels (M = 1) are put back as C noised to the current level, and the output is composited exactly,
    out = M * C + (1 - M) * out, so they equal C bit for bit; a soft M (0..1) blends. Off by default, so that
    what the model itself does with <C, M> stays measurable (lumiere.eval reports both).

    `steps`, `cfg`, `sampler`, `scheduler`: None is the model's default (`sampling_defaults`: 25 DDIM steps at
    cfg 4, or what a distilled checkpoint records).

    Returns (b, 3, t, h, w) in -1..1. All frames are denoised together in one pass.
    """
    cfgm = bundle.config
    settings = sampling_settings(cfgm, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler)
    ctx, uctx = encode_text(bundle, prompt, negative, context, uncond_context)
    b = ctx.shape[0]
    if init_video is not None:
        b, _, num_frames, height, width = init_video.shape
    t, h, w = num_frames or cfgm.num_frames, height or cfgm.resolution, width or cfgm.resolution
    net = video_net(bundle.model)
    if isinstance(net, STUNet):
        net.check_num_frames(t)
    device = model_device(bundle)
    ctx, uctx = ctx.to(device), uctx.to(device)
    C, M, init_video = (None if v is None else v.to(device) for v in (C, M, init_video))
    cond = jcm_cond(bundle, C, M, (b, t, h, w), device)
    denoiser = Denoiser(net, ctx, uctx, cond, settings["cfg"])
    return sample_video(cfgm, denoiser, (b, 3, t, h, w), settings, seed, device, init=init_video, strength=strength,
                        C=C, M=M, replace_known=replace_known, callback=callback, disable=disable)


@torch.no_grad()
def upscale(bundle: LumiereBundle, video: torch.Tensor, prompt: str | list[str], *, window: int | None = None,
            overlap: int | None = None, fuse: str = DEFAULT_FUSE, tile: int | None = None, steps: int | None = None,
            cfg: float | None = None, seed: int = 0, sampler: str | None = None, scheduler: str | None = None,
            negative: str = "", denoise: float | None = None, callback: Callable | None = None,
            disable: bool = True) -> torch.Tensor:
    """Spatial super-resolution of a low-res clip (b, 3, t, h, w) with temporal MultiDiffusion over windows.

    `denoise` in (0, 1] (as core samplers' denoise): 1 starts from pure noise; below 1 the sampler starts from the
    bilinearly up-sampled clip noised to an intermediate level and runs the last `denoise` fraction of the
    schedule (SDEdit: `sdedit_sigmas`), so the result stays closer to the up-sampled input.
    `steps`, `cfg`, `sampler`, `scheduler`, `denoise`: None is the model's default (`sampling_defaults`: 20 DDIM
    steps, cfg 1, denoise SSR_DENOISE, or what a distilled checkpoint records). `window`, `overlap`: None is the
    model's frame count and half the window (`multidiffusion.resolve_window`).
    """
    cfgm = bundle.config
    settings = sampling_settings(cfgm, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler, denoise=denoise)
    denoise = settings["denoise"]
    if cfgm.conditioning != "lowres":
        raise ValueError(f"model: expected an SSR checkpoint (role 'ssr'), got role {cfgm.role!r}")
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video: expected shape (b, 3, t, h, w), got {tuple(video.shape)}")
    device = model_device(bundle)
    lowres = upsample_video(video.to(device), cfgm.scale)
    b, _, t, h, w = lowres.shape
    ctx, uctx = encode_text(bundle, prompt, negative)
    ctx, uctx = ctx.to(device).expand(b, -1, -1), uctx.to(device).expand(b, -1, -1)
    net = bundle.model
    window, overlap = resolve_window(t, window, overlap, cfgm.num_frames,
                                     check=net.check_num_frames if isinstance(net, STUNet) else None)
    denoiser = MultiDiffusionDenoiser(Denoiser(net, ctx, uctx, None, settings["cfg"]), window, overlap, fuse,
                                      tile=tile, cond=lowres)
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise: expected a value in (0, 1], got {denoise}")
    # below 1: SDEdit from the up-sampled clip; at 1 from pure noise (not the clip + sigma_max noise)
    return sample_video(cfgm, denoiser, (b, 3, t, h, w), settings, seed, device,
                        init=lowres if denoise < 1.0 else None, strength=denoise, callback=callback, disable=disable)


def parse_prompt_schedule(schedule: str | list) -> list[tuple[int, str]]:
    """"0: a red circle moving right; 32: a red circle moving up" (or [(0, "..."), (32, "...")]) -> sorted
    (start frame, prompt) pairs; the first must start at frame 0. A plain prompt is one segment from 0."""
    if isinstance(schedule, str):
        parts = [p.strip() for p in schedule.split(";") if p.strip()] or [""]  # "" is the empty prompt
        pairs = []
        for part in parts:
            head, sep, text = part.partition(":")
            if sep and head.strip().isdigit():
                pairs.append((int(head), text.strip()))
            elif len(parts) == 1:
                pairs.append((0, part))
            else:
                raise ValueError(f"prompt schedule: expected 'FRAME: prompt' segments separated by ';', got {part!r}")
    else:
        pairs = [(int(f), str(p)) for f, p in schedule]
    pairs.sort(key=lambda fp: fp[0])
    if not pairs or pairs[0][0] != 0 or len({f for f, _ in pairs}) != len(pairs):
        raise ValueError(f"prompt schedule: expected distinct start frames, the first at 0, got "
                         f"{[f for f, _ in pairs]}")
    return pairs


def check_schedule(schedule: list[tuple[int, str]], num_frames: int) -> None:
    """Every segment of a prompt schedule starts within the clip (a later one would never be used)."""
    late = [f for f, _ in schedule if f >= num_frames]
    if late:
        raise ValueError(f"prompt schedule: expected segments starting within the clip's {num_frames} frames "
                         f"(0-{num_frames - 1}), got start frame(s) {late}; lengthen the clip or move them")


def segment_at(schedule: list[tuple[int, str]], frame: int) -> int:
    """Index of the schedule segment that frame `frame` falls in (the first, for frames before every start)."""
    return max((i for i, (start, _) in enumerate(schedule) if start <= frame), default=0)


def window_segment(schedule: list[tuple[int, str]], frames: list[int]) -> int:
    """Index of the schedule segment a window of frame indices is denoised with: the one its centre frame is in."""
    return segment_at(schedule, frames[(len(frames) - 1) // 2])


@torch.no_grad()
def generate_long(bundle: LumiereBundle, prompts: str | list, num_frames: int, *, window: int | None = None,
                  overlap: int | None = None, fuse: str = DEFAULT_FUSE, height: int | None = None,
                  width: int | None = None, steps: int | None = None, cfg: float | None = None, seed: int = 0,
                  sampler: str | None = None, scheduler: str | None = None, negative: str = "",
                  C: torch.Tensor | None = None,
                  M: torch.Tensor | None = None, replace_known: bool = False, loop: bool = False,
                  callback: Callable | None = None, disable: bool = True) -> torch.Tensor:
    """A clip longer than the model's window: temporal MultiDiffusion of the base over overlapping windows
    (the reconciliation the SSR uses), with prompt travel: each window is denoised with the prompt of the
    schedule segment its centre frame falls in, and the overlaps blend neighbouring prompts (`fuse="ramped"`
    fades them). <C, M> (e.g. keyframes) is sliced with the windows. Memory is one window's, whatever the length.

    `loop=True`: a seamless loop — the windows lie on a circle, some wrapping from the last frames to the first
    (`multidiffusion.loop_window_starts`), so the last frame flows into the first. Any length from one window up.

    `prompts`: a prompt, or a schedule "0: prompt A; 32: prompt B" / [(0, "A"), (32, "B")].  -> (1, 3, T, h, w)
    `steps`, `cfg`, `sampler`, `scheduler`: None is the model's default (`sampling_defaults`). `window`, `overlap`:
    None is the model's frame count and half the window (`multidiffusion.resolve_window`).
    """
    cfgm = bundle.config
    settings = sampling_settings(cfgm, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler)
    schedule = parse_prompt_schedule(prompts)
    check_schedule(schedule, num_frames)
    h, w = height or cfgm.resolution, width or cfgm.resolution
    net = video_net(bundle.model)
    window, overlap = resolve_window(num_frames, window, overlap, cfgm.num_frames, loop,
                                     check=net.check_num_frames if isinstance(net, STUNet) else None,
                                     name="num_frames")
    device = model_device(bundle)
    C, M = (None if v is None else v.to(device) for v in (C, M))
    cond = jcm_cond(bundle, C, M, (1, num_frames, h, w), device)
    texts = [p for _, p in schedule]
    ctx, uctx = (c.to(device) for c in encode_text(bundle, texts, negative))
    denoisers = [Denoiser(net, ctx[i:i + 1], uctx[i:i + 1], None, settings["cfg"]) for i in range(len(texts))]
    md = MultiDiffusionDenoiser(denoisers[0], window, overlap, fuse, cond=cond, loop=loop,
                                choose=lambda frames: denoisers[window_segment(schedule, frames)])
    return sample_video(cfgm, md, (1, 3, num_frames, h, w), settings, seed, device, C=C, M=M,
                        replace_known=replace_known, callback=callback, disable=disable)


@torch.no_grad()
def generate_extended(bundle: LumiereBundle, prompts: str | list, num_frames: int, *,
                      clip: torch.Tensor | None = None, context: int | None = None, height: int | None = None,
                      width: int | None = None, seed: int = 0, replace_known: bool = True,
                      callback: Callable | None = None, **sample_kw) -> torch.Tensor:
    """A clip of any length by repeated extension: each pass generates one window of the model's frames whose
    first `context` frames (default half the window) are the current clip's last ones (`conditioning.extend`),
    and appends the rest. `clip` (1, 3, k, h, w), if given, is continued; otherwise the first window is
    text-to-video. Each pass takes the prompt of the schedule segment its first new frame falls in (prompt
    travel) and the seed + pass number. `sample_kw`: steps, cfg, sampler, scheduler, negative.
    The alternative to `generate_long` (MultiDiffusion windows); `lumiere.eval` compares the two.  -> (1, 3, T, h, w)
    """
    schedule = parse_prompt_schedule(prompts)
    window = bundle.config.num_frames
    context = window // 2 if context is None else context
    if not 1 <= context < window:
        raise ValueError(f"context: expected 1 to {window - 1} known frames per extension, got {context}")
    if clip is not None:
        if clip.ndim != 5 or clip.shape[:2] != (1, 3):
            raise ValueError(f"clip: expected a video of shape (1, 3, t, h, w), got {tuple(clip.shape)}")
        if clip.shape[2] >= num_frames:
            raise ValueError(f"num_frames: expected more than the clip's {clip.shape[2]} frames, got {num_frames}")
        height, width = clip.shape[-2:]
        video = clip.to(model_device(bundle))
    else:
        video = generate(bundle, schedule[0][1], num_frames=min(window, num_frames), height=height,
                         width=width, seed=seed, callback=callback, **sample_kw)
    passes = 0
    while video.shape[2] < num_frames:
        passes += 1
        known = video[:, :, -context:]
        C, M = recipes.extend(known, window)
        prompt = schedule[segment_at(schedule, video.shape[2])][1]
        part = generate(bundle, prompt, num_frames=window, seed=seed + passes, C=C, M=M,
                        replace_known=replace_known, callback=callback, **sample_kw)
        new = min(window - context, num_frames - video.shape[2])
        video = torch.cat([video, part[:, :, context:context + new]], dim=2)
    return video


def run_batches(fn, items: list, batch: int) -> list:
    """fn(items[i:i + batch], i) for each batch of `items` (i: the index of its first item, e.g. its seed offset)."""
    out = []
    for i in range(0, len(items), batch):
        out.append(fn(items[i:i + batch], i))
    return out
