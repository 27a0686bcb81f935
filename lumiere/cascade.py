"""The temporal cascade Lumiere argues against (Sec. 1 and Fig. 2 of the paper), built from this pack's parts: a
keyframe base samples every `stride`-th frame of the clip (20 keyframes at 4 fps for 80 frames at 16 fps), and
a temporal super-resolution (TSR) model fills the frames between them in fixed, non-overlapping windows (16
frames at 16 fps, keyframes known at 0, 4, 8, 12: the <C, M> keyframes task with a fixed stride, trained with
`keyframe_stride`). Each window sees only its own keyframes: nothing ties the windows together but them.
"""
from __future__ import annotations

import torch

from . import conditioning as cond_lib
from .checkpoint import LumiereBundle
from .pipeline import generate


@torch.no_grad()
def generate_cascade(keyframe_model: LumiereBundle, tsr_model: LumiereBundle, prompt: str | list[str],
                     num_frames: int, *, stride: int = 4, steps: int = 25, cfg: float = 4.0, seed: int = 0,
                     replace_known: bool = True) -> torch.Tensor:
    """Keyframes, then TSR windows -> (b, 3, num_frames, h, w) in -1..1.

    The keyframe base makes num_frames / stride frames (seed); window w of the TSR (its model's num_frames long)
    keeps keyframes w * window / stride ... at frames 0, stride, ... of the window (exactly, with
    `replace_known`) and generates the rest (seed + 1 + w). Frames after a window's last keyframe are
    extrapolated from that window's keyframes alone (the next window's first keyframe is not seen).
    """
    window = tsr_model.config.num_frames
    if stride < 1 or window % stride or num_frames % window:
        raise ValueError(f"num_frames: expected a multiple of the TSR's window ({window} frames, itself a multiple "
                         f"of stride {stride}), got {num_frames}")
    if keyframe_model.config.conditioning != "jcm" or tsr_model.config.conditioning != "jcm":
        raise ValueError("tsr_model: expected a base with <C, M> conditioning (role 'base', conditioning 'jcm'), "
                         f"got {tsr_model.config.conditioning!r}")
    keys = generate(keyframe_model, prompt, num_frames=num_frames // stride, steps=steps, cfg=cfg, seed=seed)
    per_window = window // stride
    local = list(range(0, window, stride))
    parts = []
    for w in range(num_frames // window):
        C, M = cond_lib.keyframes(keys[:, :, w * per_window:(w + 1) * per_window], local, window)
        parts.append(generate(tsr_model, prompt, num_frames=window, steps=steps, cfg=cfg, seed=seed + 1 + w,
                              C=C, M=M, replace_known=replace_known))
    return torch.cat(parts, dim=2)
