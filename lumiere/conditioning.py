"""The 7-channel <J, C, M> input: C is the masked conditioning video, M the mask (1 = known, 0 = generate).

Each recipe returns (C (b, 3, t, h, w) in -1..1 with C = 0 where M = 0, M (b, 1, t, h, w) in {0, 1}).
The network input is cat([J, C, M], dim=1). Plain text-to-video is C = M = 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def _check_video(name: str, video: torch.Tensor) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"{name}: expected a video of shape (b, 3, t, h, w), got {tuple(video.shape)}")


def _check_mask(name: str, mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Masks may be (h, w), (t, h, w) or (b, 1, t, h, w); returns (b, 1, t, h, w) as 0/1 floats."""
    b, _, t, h, w = shape
    m = mask.float()
    if m.ndim == 2:
        m = m[None, None, None]
    elif m.ndim == 3:
        m = m[None, None]
    if m.ndim != 5 or m.shape[1] != 1 or m.shape[-2:] != (h, w) or m.shape[2] not in (1, t):
        raise ValueError(f"{name}: expected a mask of size {h}x{w} with 1 or {t} frames, got shape "
                         f"{tuple(mask.shape)}")
    return (m > 0.5).float().expand(b, 1, t, h, w)


def text_to_video(b: int, t: int, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(b, 3, t, h, w, device=device), torch.zeros(b, 1, t, h, w, device=device)


def image_to_video(image: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The video starts at `image` (b, 3, h, w): C = image on frame 0, blank after; M = 1 on frame 0 only."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image: expected shape (b, 3, h, w), got {tuple(image.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    b, _, h, w = image.shape
    C = torch.zeros(b, 3, num_frames, h, w, device=image.device)
    M = torch.zeros(b, 1, num_frames, h, w, device=image.device)
    C[:, :, 0] = image
    M[:, :, 0] = 1
    return C, M


def inpaint(video: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep `video` where `known` is 1 (a mask per frame or one for all frames), generate the rest."""
    _check_video("video", video)
    M = _check_mask("mask", known, tuple(video.shape))
    return video * M, M


def outpaint(video: torch.Tensor, pad: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend the canvas by `pad` = (left, right, top, bottom) pixels; the original area is known."""
    _check_video("video", video)
    if len(pad) != 4 or min(pad) < 0 or not any(pad):
        raise ValueError(f"pad: expected 4 non-negative sizes (left, right, top, bottom), at least one above 0, "
                         f"got {pad}")
    C = F.pad(video, (pad[0], pad[1], pad[2], pad[3]))
    M = F.pad(torch.ones_like(video[:, :1]), (pad[0], pad[1], pad[2], pad[3]))
    return C, M


def cinemagraph(image: torch.Tensor, animate: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Animate only the region `animate` (1 = moves) of `image`: C = image repeated; M = 1 on all of frame 0 and
    outside the region on the other frames."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image: expected shape (b, 3, h, w), got {tuple(image.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    b, _, h, w = image.shape
    shape = (b, 3, num_frames, h, w)
    region = _check_mask("mask", animate, shape)
    M = 1 - region
    M[:, :, 0] = 1
    C = image[:, :, None].expand(shape) * M
    return C, M


def parse_indices(text: str) -> list[int]:
    """"0, 15" or "0 8 -1" -> [0, 15] / [0, 8, -1] (negative counts from the end, as in Python)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"indices: expected frame numbers separated by commas (e.g. \"0, 15\"), got {text!r}") from None


def keyframes(frames: torch.Tensor, indices, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (b, 3, k, h, w) placed at `indices` (k distinct frame numbers; negative counts from the end);
    everything between is generated."""
    _check_video("frames", frames)
    indices = [int(i) + (num_frames if int(i) < 0 else 0) for i in indices]
    if len(indices) != frames.shape[2] or len(set(indices)) != len(indices) or \
            not all(0 <= i < num_frames for i in indices):
        raise ValueError(f"indices: expected {frames.shape[2]} distinct frame numbers in 0..{num_frames - 1}, "
                         f"got {indices}")
    b, _, _, h, w = frames.shape
    C = frames.new_zeros(b, 3, num_frames, h, w)
    M = frames.new_zeros(b, 1, num_frames, h, w)
    C[:, :, indices] = frames
    M[:, :, indices] = 1
    return C, M


def extend(clip: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continue `clip` (b, 3, k, h, w): its k frames are the first k of the output, the rest is generated."""
    _check_video("clip", clip)
    k = clip.shape[2]
    if not 1 <= k < num_frames:
        raise ValueError(f"clip: expected 1 to {num_frames - 1} frames to continue into {num_frames}, got {k}")
    return keyframes(clip, range(k), num_frames)


def direct(C: torch.Tensor, M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C and M given by the user: validated and zeroed where unknown."""
    _check_video("conditioning video", C)
    M = _check_mask("mask", M, tuple(C.shape))
    return C * M, M


@dataclass(frozen=True)
class Task:
    """One <C, M> task as the CLI and the nodes offer it (and the conditioning stage trains it).

    source: what the prompt is joined by: None (text alone), "still" (an image: the first frame of the source),
    "keyframes" (images placed at `indices`), "clip" (frames the output continues), "video" (the output's own
    frames: a clip of at least the output's length, cut to it).
    needs: the other inputs: "mask" (1 = generate / animate, the front-ends' convention: ComfyUI's MASK, white in
    the CLI's PNG), "pad" (left, right, top, bottom), "indices" (a frame number per keyframe).
    recipe(source (b, 3, k, h, w), num_frames, mask, pad, indices) -> (C, M); None for text (C = M = 0)."""
    source: str | None
    needs: tuple[str, ...]
    recipe: Callable | None


# The frame-level tasks are masks too: any set of known frames (first + last = generative interpolation; the first
# k frames of the output = the end of a clip being extended). "direct" takes C and M as given (1 - mask = M).
TASKS = {
    "text": Task(None, (), None),
    "image_to_video": Task("still", (), lambda s, n, mask, pad, indices: image_to_video(s[:, :, 0], n)),
    "inpaint": Task("video", ("mask",), lambda s, n, mask, pad, indices: inpaint(s, 1 - mask)),
    "outpaint": Task("video", ("pad",), lambda s, n, mask, pad, indices: outpaint(s, pad)),
    "cinemagraph": Task("still", ("mask",), lambda s, n, mask, pad, indices: cinemagraph(s[:, :, 0], mask, n)),
    "keyframes": Task("keyframes", ("indices",), lambda s, n, mask, pad, indices: keyframes(s, indices, n)),
    "extend": Task("clip", (), lambda s, n, mask, pad, indices: extend(s, n)),
    "direct": Task("video", ("mask",), lambda s, n, mask, pad, indices: direct(s, 1 - mask)),
}
MODES = tuple(TASKS)
# the conditioning stage's mixture: every task whose inputs it can draw ("direct" is inpainting by another name)
TRAINING_TASKS = tuple(name for name in TASKS if name != "direct")


def task(mode: str) -> Task:
    if mode not in TASKS:
        raise ValueError(f"mode: expected one of {list(TASKS)}, got {mode!r}")
    return TASKS[mode]


def build(mode: str, source: torch.Tensor | None, num_frames: int, mask: torch.Tensor | None = None,
          pad: tuple[int, int, int, int] | None = None, indices=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(C, M) of task `mode` from a front-end's inputs: `source` (b, 3, k, h, w) (a still is k = 1), `mask` with
    1 = generate / animate. (None, None) for text alone."""
    t = task(mode)
    if t.recipe is None:
        return None, None
    given = {"mask": mask, "pad": pad, "indices": indices}
    for name in t.needs:
        if given[name] is None:
            raise ValueError(f"{name}: expected one for {mode}, got none")
    _check_video("source", source)
    return t.recipe(source, num_frames, mask, pad, indices)


def pack(C: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """The extra input channels <C * M, M> that follow the noisy video J in the network input (C zeroed where
    unknown). The one packing, used by the pipeline, the ComfyUI nodes and training.  # (b, 4, t, h, w)"""
    if C.shape[0] != M.shape[0] or C.shape[2:] != M.shape[2:] or C.shape[1] != 3 or M.shape[1] != 1:
        raise ValueError(f"conditioning: expected C (b, 3, t, h, w) and M (b, 1, t, h, w) of one size, got "
                         f"{tuple(C.shape)} and {tuple(M.shape)}")
    return torch.cat([C * M, M], dim=1)


def motion_region(clip: torch.Tensor, margin: int = 1, threshold: float = 0.05) -> torch.Tensor:
    """The bounding box (+ margin) of every pixel that changes over the clip (3, t, h, w) -> (h, w) 0/1.

    Used as the animated region of a cinemagraph, so that outside it the clip really is static (the training
    target agrees with C there)."""
    h, w = clip.shape[-2:]
    moving = (clip - clip[:, :1]).abs().amax(dim=(0, 1)) > threshold
    region = torch.zeros(h, w)
    if moving.any():
        ys, xs = torch.nonzero(moving, as_tuple=True)
        region[max(0, int(ys.min()) - margin): int(ys.max()) + 1 + margin,
               max(0, int(xs.min()) - margin): int(xs.max()) + 1 + margin] = 1
    else:
        region[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    return region
