"""The motion a LoRA teaches, read from pixels: the object's trajectory (the eval's object reader,
`lumiere.metrics.object_pixels`), its direction as an angle, and how many clips follow a target diagonal rather than
the axis direction the base model makes for the prompt (`scripts/motion_lora.py`, tests/comfy/test_motion_lora.py)."""
from __future__ import annotations

import math

import torch

from .metrics import object_pixels
from .lora import DIAGONALS

DIAGONAL_TOLERANCE_DEG = 22.5  # a clip follows the diagonal when its direction is within this of it


def velocity(video: torch.Tensor) -> tuple[float, float, int]:
    """The object's velocity (px/frame, least squares over the frames where it is seen) in one clip
    (3, t, h, w) in -1..1 -> (vx, vy, frames seen); y grows downward."""
    _, _, area, cx, cy = object_pixels(video)
    sel = torch.nonzero(area >= 3).flatten()
    if len(sel) < 2:
        return 0.0, 0.0, len(sel)
    tt = sel.float() - sel.float().mean()
    den = float((tt ** 2).sum())
    return (float((tt * (cx[sel] - cx[sel].mean())).sum()) / den,
            float((tt * (cy[sel] - cy[sel].mean())).sum()) / den, len(sel))


def angle_between(a: float, b: float) -> float:
    """The smaller angle (degrees, 0..180) between two directions given in degrees."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


AXES = {"right": (1.0, 0.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "up": (0.0, -1.0)}


def motion_figures(videos: torch.Tensor, target: str = "down-right", axis: str = "right") -> dict:
    """How clips (n, 3, t, h, w) move, read from pixels: the mean direction (degrees, 0 = right, 90 = down), the
    fraction of clips on the `target` diagonal and on the `axis` direction (the one the base model makes for the
    prompt), each within DIAGONAL_TOLERANCE_DEG, the speed across the axis over the speed along it (0 on the
    axis, 1 on a diagonal) and the mean speed. Clips with < 1 px of travel count as on neither."""
    if target not in DIAGONALS or axis not in AXES:
        raise ValueError(f"target/axis: expected one of {list(DIAGONALS)} / {list(AXES)}, got {target!r} / {axis!r}")
    target_deg = math.degrees(math.atan2(DIAGONALS[target][1], DIAGONALS[target][0]))
    ax, ay = AXES[axis]
    axis_deg = math.degrees(math.atan2(ay, ax))
    rows = []
    for v in videos:
        vx, vy, seen = velocity(v)
        if math.hypot(vx, vy) * max(seen - 1, 1) >= 1.0:  # >= 1 px of travel
            rows.append((math.degrees(math.atan2(vy, vx)), math.hypot(vx, vy), vx, vy))
    n = videos.shape[0]
    mean_dx = sum(r[2] for r in rows) / max(len(rows), 1)
    mean_dy = sum(r[3] for r in rows) / max(len(rows), 1)
    along = sum(abs(r[2] * ax + r[3] * ay) for r in rows)
    across = sum(abs(r[2] * ay - r[3] * ax) for r in rows)
    return {
        "clips": n,
        "moving": len(rows),
        "mean_direction_deg": round(math.degrees(math.atan2(mean_dy, mean_dx)), 1) if rows else None,
        "on_target_rate": round(sum(angle_between(r[0], target_deg) <= DIAGONAL_TOLERANCE_DEG for r in rows) / n, 4),
        "on_axis_rate": round(sum(angle_between(r[0], axis_deg) <= DIAGONAL_TOLERANCE_DEG for r in rows) / n, 4),
        "across_over_along": round(across / max(along, 1e-6), 3),
        "mean_speed_px": round(sum(r[1] for r in rows) / max(len(rows), 1), 3),
    }
