"""Reading clips from their pixels: the measurements the eval, the training probes and the tests share.

Objects (colour, shape, direction, jumps), camera motion, PSNR, flicker, loop seams and window boundaries, and the
references they are read against (the procedural ground truth, bicubic up-sampling). Every reader takes clips in
-1..1 and returns plain numbers; nothing here samples a model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data.camera import CONTENT_MOTION
from .data.procedural import COLOURS, ProceduralClips
from .pipeline import downsample_video

def object_pixels(video: torch.Tensor):
    """The object of one clip (3, t, h, w) in -1..1, from pixels: background = per-frame median of the border
    pixels; object = pixels whose max channel differs from it by > 0.3 (0..1 units).
    -> (frames in 0..1 (3, t, h, w), mask (t, h, w), area (t,), centroid x (t,), centroid y (t,))"""
    v = (video.float().clamp(-1, 1) + 1) / 2
    _, t, h, w = v.shape
    border = torch.cat([v[:, :, 0], v[:, :, -1], v[:, :, :, 0], v[:, :, :, -1]], dim=-1)  # (3, t, 2h+2w)
    bg = border.median(dim=-1).values  # (3, t)
    mask = (v - bg[:, :, None, None]).abs().amax(dim=0) > 0.3  # (t, h, w)
    area = mask.flatten(1).sum(1).float()  # (t,)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cx = (mask * xs).flatten(1).sum(1) / area.clamp(min=1)
    cy = (mask * ys).flatten(1).sum(1) / area.clamp(min=1)
    return v, mask, area, cx, cy


def analyse(video: torch.Tensor, first_frames: int | None = None) -> dict:
    """One clip (3, t, h, w) in -1..1 -> the object's colour, shape, direction and stability, from pixels.

    Background = per-frame median of the border pixels; object = pixels whose max channel differs from it by > 0.3
    (in 0..1 units). Direction = the sign of the larger least-squares centroid velocity over the first
    `first_frames` (default: half the clip, before any bounce); < 1 px of travel there is "static".
    """
    v, mask, area, cx, cy = object_pixels(video)
    t = v.shape[1]
    ok = area >= 3
    rgb_frames = (v * mask[None]).flatten(2).sum(2) / area.clamp(min=1)  # (3, t)
    res = {"area_mean": float(area.mean()), "valid_frames": int(ok.sum())}
    if ok.sum() == 0:
        return {**res, "colour": None, "shape": None, "direction": "none", "travel": 0.0,
                "size_cv": float("nan"), "colour_std": float("nan")}
    rgb = (rgb_frames[:, ok] * area[ok]).sum(1) / area[ok].sum()
    names = list(COLOURS)
    pal = torch.tensor([COLOURS[n] for n in names])
    res["colour"] = names[int(((pal - rgb) ** 2).sum(1).argmin())]
    # shape: fill ratio of the mask in its bounding box, median over frames (circle ~0.79, square ~1, triangle ~0.5)
    fills = []
    for k in range(t):
        if area[k] >= 6:
            yy, xx = torch.nonzero(mask[k], as_tuple=True)
            box = float((yy.max() - yy.min() + 1) * (xx.max() - xx.min() + 1))
            fills.append(float(area[k]) / box)
    fill = float(torch.tensor(fills).median()) if fills else float("nan")
    res["fill"] = fill
    res["shape"] = None if not fills else ("square" if fill > 0.88 else "circle" if fill > 0.64 else "triangle")
    n = first_frames or max(2, t // 2)
    sel = torch.nonzero(ok[:n]).flatten()
    if len(sel) >= 2:
        tt = sel.float()
        tc = tt - tt.mean()
        vx = float((tc * (cx[sel] - cx[sel].mean())).sum() / (tc ** 2).sum())
        vy = float((tc * (cy[sel] - cy[sel].mean())).sum() / (tc ** 2).sum())
        travel = math.hypot(vx, vy) * float(tt.max() - tt.min())
        if travel < 1.0:
            direction = "static"
        elif abs(vx) >= abs(vy):
            direction = "right" if vx > 0 else "left"
        else:
            direction = "down" if vy > 0 else "up"
    else:
        direction, travel = "none", 0.0
    res.update(direction=direction, travel=travel,
               size_cv=float(area[ok].std() / area[ok].mean()) if ok.sum() > 1 else 0.0,
               colour_std=float(rgb_frames[:, ok].std(dim=1).mean()) if ok.sum() > 1 else 0.0)
    return res


# a clip "jumps" when the object's centroid moves more than this many times the data's fastest motion between two
# frames, or when it vanishes or splits in a frame between frames where it is there (ground truth: never)
JUMP_SPEED_FACTOR = 3.0


def components(mask: torch.Tensor) -> list[int]:
    """Areas of the 8-connected components of a (h, w) bool mask, largest first."""
    h, w = mask.shape
    labels = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w), torch.zeros(h, w))
    for _ in range(h * w):
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    ids = labels[mask].long()
    return sorted(torch.bincount(ids).tolist()[1:], reverse=True) if ids.numel() else []


def jumps(video: torch.Tensor, max_speed_px: float) -> dict:
    """Temporal incoherence of one clip (3, t, h, w): the largest frame-to-frame centroid move, and the frames
    where the object vanishes (< 3 px) or splits (a second component >= 1/4 of the largest) between frames where
    it is whole. `jump` when the move exceeds JUMP_SPEED_FACTOR x `max_speed_px`, or any frame vanishes or splits."""
    v, mask, area, cx, cy = object_pixels(video)
    t = v.shape[1]
    present = area >= 3
    moves = [math.hypot(float(cx[k + 1] - cx[k]), float(cy[k + 1] - cy[k]))
             for k in range(t - 1) if present[k] and present[k + 1]]
    split = []
    for k in range(t):
        if present[k]:
            comp = components(mask[k])
            split.append(len(comp) > 1 and comp[1] >= max(3, comp[0] / 4))
        else:
            split.append(False)
    seen = torch.nonzero(present).flatten()
    inner = range(int(seen[0]), int(seen[-1]) + 1) if len(seen) else range(0)
    vanished = sum(1 for k in inner if not present[k])
    max_move = max(moves) if moves else 0.0
    return {"max_move_px": round(max_move, 2), "vanished_frames": vanished, "split_frames": int(sum(split)),
            "jump": bool(max_move > JUMP_SPEED_FACTOR * max_speed_px or vanished > 0 or any(split))}


def data_max_speed(size: int, frames: int, speed_max: float = 2.0) -> float:
    """The fastest motion in the training data at `size` px (px/frame): the drawn maximum, or the no-bounce cap."""
    gen = torch.Generator().manual_seed(0)
    data = ProceduralClips(size=size, frames=frames, split="all")
    video = data.render_specs(data.sample_specs(64, gen), gen)
    moves = [jumps(v, 1.0)["max_move_px"] for v in video]
    return min(speed_max * size / 32, max(moves) * 1.05)


CAMERA_SHIFT_PX, CAMERA_SCALE_STEP = 8, 1.12  # the estimator's search range (px at 32) and zoom step per pair


def _warp_candidates(a: torch.Tensor, shifts: int, scales: tuple[float, ...]) -> tuple[torch.Tensor, list]:
    """Frame a (3, h, w) moved by every integer shift in -shifts..shifts and zoomed by each scale about the centre
    -> (K, 3, h, w) predictions of a later frame, and the K (dx, dy, scale) they stand for."""
    _, h, w = a.shape
    cands = [(dx, dy, s) for s in scales for dy in range(-shifts, shifts + 1) for dx in range(-shifts, shifts + 1)]
    ys = (torch.arange(h, dtype=torch.float32) + 0.5)
    xs = (torch.arange(w, dtype=torch.float32) + 0.5)
    t = torch.tensor(cands, dtype=torch.float32)  # (K, 3)
    # the later frame at x shows the earlier one at c + (x - c) / s - d (content moved by d, grown by s)
    src_x = w / 2 + (xs[None] - w / 2) / t[:, 2, None] - t[:, 0, None]  # (K, w)
    src_y = h / 2 + (ys[None] - h / 2) / t[:, 2, None] - t[:, 1, None]  # (K, h)
    grid = torch.stack([(src_x / w * 2 - 1)[:, None, :].expand(-1, h, -1),
                        (src_y / h * 2 - 1)[:, :, None].expand(-1, -1, w)], dim=-1)
    pred = F.grid_sample(a[None].expand(len(cands), -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)
    return pred, cands


def camera_motion(video: torch.Tensor) -> dict:
    """The camera motion of a clip (3, t, h, w), read from pixels: the content's displacement and zoom between
    frames t/3 apart, by exhaustive search (shifts up to CAMERA_SHIFT_PX at 32 px, zoom steps of
    CAMERA_SCALE_STEP), compared on the centre of the frame. -> {"motion": one of CAMERA_MOTIONS or "static",
    "shift_px": (dx, dy) of the content over the clip, "zoom": the content's total growth}."""
    v = video.float().clamp(-1, 1)
    _, t, h, w = v.shape
    k = h / 32
    shifts = max(1, round(CAMERA_SHIFT_PX * k))
    step = max(1, (t - 1) // 3)
    m = shifts + max(1, h // 8)  # compare away from the borders the warp smears
    total_dx = total_dy = 0.0
    zoom = 1.0
    for a in range(0, t - step, step):
        pred, cands = _warp_candidates(v[:, a], shifts, (1 / CAMERA_SCALE_STEP, 1.0, CAMERA_SCALE_STEP))
        err = (pred[:, :, m:h - m, m:w - m] - v[None, :, a + step, m:h - m, m:w - m]).pow(2).mean(dim=(1, 2, 3))
        dx, dy, s = cands[int(err.argmin())]
        total_dx, total_dy, zoom = total_dx + dx, total_dy + dy, zoom * s
    n_pairs = len(range(0, t - step, step))
    moved = max(abs(total_dx), abs(total_dy))
    # a zoom keeps its centre (pans move >= 10 px at 32)
    if moved < 8 * k and zoom >= CAMERA_SCALE_STEP ** max(1, n_pairs - 1) - 1e-6:
        motion = "in"
    elif moved < 8 * k and zoom <= CAMERA_SCALE_STEP ** -max(1, n_pairs - 1) + 1e-6:
        motion = "out"
    elif moved < 2 * k:
        motion = "static"
    else:
        content = (float(math.copysign(1, total_dx)), 0.0) if abs(total_dx) >= abs(total_dy) else \
            (0.0, float(math.copysign(1, total_dy)))
        motion = next(cam for cam, vec in CONTENT_MOTION.items() if vec == content)
    return {"motion": motion, "shift_px": (total_dx / k, total_dy / k), "zoom": round(zoom, 4)}


def flicker(video: torch.Tensor) -> float:
    """Mean |frame[t+1] - frame[t]| in 0..1 units.  video (b, 3, t, h, w) or (3, t, h, w)"""
    v = (video.float().clamp(-1, 1) + 1) / 2
    return float((v[..., 1:, :, :] - v[..., :-1, :, :]).abs().mean())


def frame_diffs(video: torch.Tensor) -> torch.Tensor:
    """Per-transition mean |frame[t+1] - frame[t]|, averaged over the batch.  (b, 3, t, h, w) -> (t - 1,)"""
    v = (video.float().clamp(-1, 1) + 1) / 2
    return (v[:, :, 1:] - v[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB on 0..1 units (inputs in -1..1), optionally over the pixels where mask == 1."""
    err = ((a.float() - b.float()) / 2) ** 2
    if mask is not None:
        m = mask.float().expand_as(err)
        mse = float((err * m).sum() / m.sum().clamp(min=1))
    else:
        mse = float(err.mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def adherence(clips: list[dict], specs: list[dict]) -> dict:
    n = len(specs)
    col = sum(c["colour"] == s["colour"] for c, s in zip(clips, specs)) / n
    shp = sum(c["shape"] == s["shape"] for c, s in zip(clips, specs)) / n
    dirn = sum(c["direction"] == s["direction"] for c, s in zip(clips, specs)) / n
    static = sum(c["direction"] in ("static", "none") for c in clips) / n
    cv = [c["size_cv"] for c in clips if c["size_cv"] == c["size_cv"]]
    cs = [c["colour_std"] for c in clips if c["colour_std"] == c["colour_std"]]
    return {"n": n, "colour_acc": round(col, 4), "shape_acc": round(shp, 4), "direction_acc": round(dirn, 4),
            "static_or_empty": round(static, 4),
            "mean_travel_px": round(sum(c["travel"] for c in clips) / n, 3),
            "size_cv": round(sum(cv) / max(1, len(cv)), 4), "colour_std": round(sum(cs) / max(1, len(cs)), 4)}


def ground_truth(specs: list[dict], frames: int, size: int, seed: int) -> torch.Tensor:
    data = ProceduralClips(size=size, frames=frames, split="heldout")
    return data.render_specs(specs, torch.Generator().manual_seed(seed), frames, size)


def ssr_ground_truth(specs: list[dict], frames: int, size: int, scale: int, seed: int):
    """The SSR's held-out pairs: (high-res ground truth at size * scale, its area down-sampling to size)."""
    hi = ground_truth(specs, frames, size * scale, seed)
    return hi, downsample_video(hi, scale)


def bicubic_video(video: torch.Tensor, scale: int) -> torch.Tensor:
    b, c, t, h, w = video.shape
    up = F.interpolate(video.transpose(1, 2).reshape(-1, c, h, w), scale_factor=scale, mode="bicubic",
                       align_corners=False)
    return up.reshape(b, t, c, h * scale, w * scale).transpose(1, 2).clamp(-1, 1)


def seam_ratio(video: torch.Tensor) -> float:
    """The last -> first frame difference over the mean inner frame difference (1 = a seamless loop).  (3, t, h, w)"""
    d = frame_diffs(video[None])
    seam = float(((video[:, -1].float().clamp(-1, 1) - video[:, 0].float().clamp(-1, 1)).abs() / 2).mean())
    return seam / float(d.mean())


def boundary_spike(video: torch.Tensor, boundaries: list[int]) -> float:
    """Mean frame difference at the given transitions (k: frame k -> k+1) over the mean elsewhere.  (b, 3, t, h, w)"""
    d = frame_diffs(video)
    inner = [d[k] for k in range(len(d)) if k not in boundaries]
    return float(torch.stack([d[k] for k in boundaries]).mean() / torch.stack(inner).mean())


def camera_figures(videos: torch.Tensor, gt: torch.Tensor, specs: list[dict]) -> dict:
    """Direction accuracy (6 motions), frame-0 PSNR, and the continuation's PSNR against the true clip next to
    the frozen first frame's (a model that moves the right way beats the still frame)."""
    reads = [camera_motion(v)["motion"] for v in videos]
    still = gt[:, :, :1].expand_as(gt)
    return {"direction_acc": round(sum(r == s["camera"] for r, s in zip(reads, specs)) / len(specs), 4),
            "static": round(sum(r == "static" for r in reads) / len(reads), 4),
            "frame0_psnr": round(psnr(videos[:, :, 0], gt[:, :, 0]), 2),
            "continuation_psnr": round(psnr(videos[:, :, 1:], gt[:, :, 1:]), 2),
            "still_frame_psnr": round(psnr(still[:, :, 1:], gt[:, :, 1:]), 2),
            "reads": reads}
