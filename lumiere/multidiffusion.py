"""Temporal MultiDiffusion (Bar-Tal et al. 2023), as Lumiere's SSR uses it (Sec. 3.2, App. C).

At each step the clip is split into overlapping windows of T' frames, each window is denoised alone, and the
step result is the least-squares reconciliation argmin_J sum_i ||F_i(J) - D(J_i)||^2: a per-frame average over
the windows covering each frame ("flat"), or a weighted average ("ramped": weights ramp linearly across the
overlaps so windows fade into each other). A windowed denoiser is still a denoiser, so every sampler works
unchanged, and model memory is bounded by one window whatever the clip length.

With `loop=True` the windows lie on a circle: frame T-1 is followed by frame 0, and some windows wrap around the
end (e.g. frames 8..15, 0..7 of a 16-frame clip). Every window is denoised as one coherent clip, so the seam is
generated like any inner transition and the clip loops seamlessly, at any length (even one window's).
"""
from __future__ import annotations

import math

import torch

FUSE_METHODS = ("flat", "ramped")
DEFAULT_FUSE = "ramped"  # the default of the library, the CLI and both window nodes: windows fade into each other


def resolve_window(length: int, window: int | None, overlap: int | None, model_frames: int, loop: bool = False,
                   check=None, name: str = "video") -> tuple[int, int]:
    """The window and overlap for a clip of `length` frames, one convention for the library, the CLI and the nodes:
    window None or 0 = the model's own frame count `model_frames` (at most the clip for a loop); overlap None or
    0 = half the window. Where windows are used (a clip longer than one window, or a loop) the overlap must be
    2 .. window - 1; otherwise one window is the whole clip.

    `check(frames, input_name)`, if given, is the network's frame-count check, run first on what one model call
    sees: the window (named "window"), or the clip (named `name`) where one window covers it."""
    window = window or model_frames
    if window < 1:
        raise ValueError(f"window: expected >= 1 frames (0 = the model's {model_frames}), got {window}")
    if loop:
        window = min(window, length)
    windowed = window < length or loop
    if check is not None:
        check(window, "window") if windowed else check(length, name)
    overlap = overlap or window // 2
    if windowed and not 2 <= overlap < window:
        raise ValueError(f"overlap: expected 2 <= overlap < window ({window}), got {overlap}")
    return window, overlap


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Starts of windows of `window` frames that cover 0..length-1, consecutive ones sharing >= `overlap` frames,
    the last window aligned to the end."""
    if length < 1:
        raise ValueError(f"length: expected >= 1, got {length}")
    if window < 1:
        raise ValueError(f"window: expected >= 1, got {window}")
    if window >= length:
        return [0]
    if not 2 <= overlap < window:
        raise ValueError(f"overlap: expected 2 <= overlap < window ({window}), got {overlap}")
    stride = window - overlap
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def loop_window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Starts of windows on a circle of `length` frames (window i is frames s_i .. s_i + window - 1, modulo
    `length`): at least two, evenly spaced, consecutive ones (the last and the first too) sharing >= `overlap`."""
    if not 1 <= window <= length:
        raise ValueError(f"window: expected 1 to {length} frames for a loop of {length}, got {window}")
    if not 2 <= overlap < window:
        raise ValueError(f"overlap: expected 2 <= overlap < window ({window}), got {overlap}")
    count = max(2, math.ceil(length / (window - overlap)))
    return [round(i * length / count) for i in range(count)]


def time_windows(length: int, window: int | None, overlap: int, fuse: str, loop: bool = False):
    """[(frame indices, weights (window,))] covering a clip of `length` frames."""
    if loop:
        window = length if window is None else window
        return [([(s + i) % length for i in range(window)], window_weights(window, overlap, fuse, False, False))
                for s in loop_window_starts(length, window, overlap)]
    return [(list(range(t0, t1)), w) for t0, t1, w in _axis_windows(length, window, overlap, fuse)]


def window_weights(window: int, overlap: int, fuse: str, first: bool, last: bool) -> torch.Tensor:
    """Per-position weights of one window  # (window,)"""
    if fuse not in FUSE_METHODS:
        raise ValueError(f"fuse: expected one of {FUSE_METHODS}, got {fuse!r}")
    w = torch.ones(window)
    if fuse == "ramped" and overlap > 0:
        ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        if not first:
            w[:overlap] = ramp
        if not last:
            w[-overlap:] = ramp.flip(0)
    return w


def _axis_windows(length: int, window: int | None, overlap: int, fuse: str):
    if window is None or window >= length:
        return [(0, length, torch.ones(length))]
    starts = window_starts(length, window, overlap)
    return [(s, s + window, window_weights(window, overlap, fuse, i == 0, i == len(starts) - 1))
            for i, s in enumerate(starts)]


class MultiDiffusionDenoiser:
    """Wraps a denoiser D(x, s, cond=None) over videos (b, c, t, h, w) with temporal windows (and optional
    spatial tiles for large SSR frames). `cond` (e.g. the up-sampled low-res video, or <C, M>) is sliced with x.
    `choose(frames)`, if given, picks the denoiser of the window of those frame indices (e.g. its prompt, for
    prompt travel); otherwise every window uses `denoiser`. `loop`: circular windows (see the module docstring)."""

    def __init__(self, denoiser, window: int, overlap: int = 2, fuse: str = "flat",
                 tile: int | None = None, tile_overlap: int = 8, cond: torch.Tensor | None = None,
                 choose=None, loop: bool = False):
        if fuse not in FUSE_METHODS:
            raise ValueError(f"fuse: expected one of {FUSE_METHODS}, got {fuse!r}")
        if window < 1:
            raise ValueError(f"window: expected >= 1, got {window}")
        self.denoiser, self.window, self.overlap, self.fuse = denoiser, window, overlap, fuse
        self.tile, self.tile_overlap = tile, tile_overlap
        self.cond = cond if cond is not None else getattr(denoiser, "cond", None)
        self.choose = choose or (lambda frames: denoiser)
        self.loop = loop

    def windows(self, shape: tuple[int, ...]):
        """(frame indices, y0, y1, x0, x1, weight (t', h', w')) for every window/tile."""
        _, _, t, h, w = shape
        times = time_windows(t, self.window, self.overlap, self.fuse, self.loop)
        rows = _axis_windows(h, self.tile, self.tile_overlap, self.fuse)
        cols = _axis_windows(w, self.tile, self.tile_overlap, self.fuse)
        for frames, wt in times:
            for y0, y1, wy in rows:
                for x0, x1, wx in cols:
                    yield frames, y0, y1, x0, x1, wt[:, None, None] * wy[None, :, None] * wx[None, None, :]

    def __call__(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        wins = list(self.windows(tuple(x.shape)))
        if len(wins) == 1:  # one window: exactly the plain denoiser
            return self.choose(wins[0][0])(x, s, cond=self.cond)
        out = torch.zeros_like(x)
        total = torch.zeros(x.shape[2:], dtype=x.dtype, device=x.device)
        for frames, y0, y1, x0, x1, w in wins:
            # a run of frames is a view; a window wrapping around a loop's end gathers its frames
            t = slice(frames[0], frames[-1] + 1) if frames[-1] - frames[0] == len(frames) - 1 else \
                torch.tensor(frames, device=x.device)
            part = (slice(None), slice(None), t, slice(y0, y1), slice(x0, x1))
            cond = None if self.cond is None else self.cond[part]
            w = w.to(x.device, x.dtype)
            out[part] += self.choose(frames)(x[part], s, cond=cond) * w  # frames are distinct within a window
            total[t, y0:y1, x0:x1] += w
        return out / total
