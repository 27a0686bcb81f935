"""The issue-19 side-by-side picture: 80-frame clips of held-out prompts from the temporal cascade, the 16-frame
base over windows (MultiDiffusion) and the STUNet-80 in one pass, every 4th frame, with the ground truth below.

The clips are the eval's own (`python -m lumiere eval --sections whole_clip`, same seeds and prompts): this script
runs that section and keeps its videos in VIDEOS (a torch file), or reuses VIDEOS where it exists.

    python scripts/whole_clip_picture.py --models DIR [--whole-clip-clips 6 2] [--videos F.pt] \\
        [--out docs/images/whole_clip_comparison.png] [--prompts "a red circle swings fast on black" ...] \\
        [--all-dir DIR]

--prompts: the clips shown (default: the first periodic and the first event prompt of the run); --all-dir: also
one picture per clip with every method (extension too), to look at each. DIR holds the eval's file names
(lumiere_long80_base, lumiere_cascade_keyframes, lumiere_cascade_tsr, lumiere_windows16_base, lumiere_demo_base).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lumiere import eval as E  # noqa: E402
from lumiere.data.longmotion import LongMotionClips, long_caption  # noqa: E402

ROWS = (("cascade", "cascade (keyframes 4 fps + TSR)"), ("multidiffusion", "windows (16-frame MultiDiffusion)"),
        ("stunet80", "STUNet-80 (one pass)"), ("ground_truth", "ground truth"))
ALL_ROWS = ROWS[:2] + (("extension", "windows (extension)"),) + ROWS[2:]
EVERY, SCALE, LABEL_W, HEAD_H, TRACE_W = 4, 2, 250, 18, 240


def track(clip: torch.Tensor, spec: dict) -> torch.Tensor:
    """The coordinate the eval reads, per frame (px; NaN where the object is unseen): x for swings and orbits, y for
    bobs and bounces, the position along the prompted direction for crossings and rebounds."""
    if "event" in spec:
        return E.along_track(clip, spec["direction"])
    _, _, area, cx, cy = E.object_pixels(clip)
    pos = cx if spec["motion"] in ("swings", "orbits") else cy
    return torch.where(area >= 3, pos, torch.full_like(pos, float("nan")))


def trace(pos: torch.Tensor, ref: torch.Tensor, size: int, h: int) -> Image.Image:
    """Every frame's coordinate as a line (black), over the ground truth's (light red): the period seen whole, where
    every 4th frame would alias it."""
    img = Image.new("RGB", (TRACE_W, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    t = len(pos)
    lo = min(0.0, float(torch.nan_to_num(torch.cat([pos, ref]), nan=0).min()))
    hi = max(float(size), float(torch.nan_to_num(torch.cat([pos, ref]), nan=0).max()))

    def pts(p):
        return [(4 + i * (TRACE_W - 8) / (t - 1), h - 3 - (float(v) - lo) / (hi - lo) * (h - 6))
                for i, v in enumerate(p)]
    for p, colour in ((ref, (240, 150, 150)), (pos, (0, 0, 0))):
        run = []
        for (x, y), v in zip(pts(p), p):
            if torch.isnan(v):
                if len(run) > 1:
                    d.line(run, fill=colour, width=1)
                run = []
            else:
                run.append((x, y))
        if len(run) > 1:
            d.line(run, fill=colour, width=1)
    d.rectangle((0, 0, TRACE_W - 1, h - 1), outline=(200, 200, 200))
    return img


def eval_videos(models: str, clips: tuple[int, int] | None, seed: int, threads: int) -> tuple[dict, list, dict]:
    """The whole_clip section on `models`, keeping its videos: ({method: (b, 3, t, h, w)}, specs, figures)."""
    kept = {}
    section = E.whole_clip_section

    def keep(run):
        res = section(run)
        kept["videos"] = run.videos["whole_clip"]
        kept["specs"] = E.whole_clip_specs(1, *(run.whole_clip_clips or (None, None)))
        return res
    E.whole_clip_section = keep
    try:
        res = E.evaluate(models, seed=seed, threads=threads, sections=("whole_clip",), whole_clip_clips=clips,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        E.whole_clip_section = section
    return kept["videos"], kept["specs"], res["whole_clip"]


def to_image(frame: torch.Tensor) -> Image.Image:
    """(3, h, w) in -1..1 -> RGB, SCALE x (nearest)."""
    a = ((frame.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    im = Image.fromarray(a)
    return im.resize((im.width * SCALE, im.height * SCALE), Image.NEAREST)


def picture(blocks: list[tuple[str, dict, list[tuple[str, torch.Tensor]]]], gt: dict) -> Image.Image:
    """blocks: (title, spec, [(row label, (3, t, h, w) clip)]); gt: title -> the ground-truth clip -> one image: per
    block a title line, then one row per clip (every EVERY-th frame, frame numbers on top) and the trace of every
    frame's coordinate at the right."""
    t, size = blocks[0][2][0][1].shape[1], blocks[0][2][0][1].shape[2]
    h = size * SCALE
    cols = list(range(0, t, EVERY))
    width = LABEL_W + len(cols) * (h + 2) + 6 + TRACE_W
    height = sum(HEAD_H * 2 + len(rows) * (h + 2) for _, _, rows in blocks)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    y = 0
    for title, spec, rows in blocks:
        d.text((4, y + 3), title, fill=(0, 0, 0))
        y += HEAD_H
        for j, f in enumerate(cols):
            d.text((LABEL_W + j * (h + 2) + 2, y + 3), str(f), fill=(90, 90, 90))
        coord = "along the path" if "event" in spec else ("x" if spec["motion"] in ("swings", "orbits") else "y")
        d.text((LABEL_W + len(cols) * (h + 2) + 8, y + 3), f"{coord}, all {t} frames (red: truth)", fill=(90, 90, 90))
        y += HEAD_H
        ref = track(gt[title], spec)
        for label, clip in rows:
            d.text((4, y + h // 2 - 6), label, fill=(0, 0, 0))
            for j, f in enumerate(cols):
                img.paste(to_image(clip[:, f]), (LABEL_W + j * (h + 2), y))
            img.paste(trace(track(clip, spec), ref, size, h), (LABEL_W + len(cols) * (h + 2) + 6, y))
            y += h + 2
    return img


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="folder with the eval's file names (needed without --videos)")
    p.add_argument("--whole-clip-clips", type=int, nargs=2, default=None, metavar=("PERIODIC", "EVENTS"))
    p.add_argument("--videos", default=None, help="torch file of the clips: reused where it exists, else written")
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "whole_clip_comparison.png"))
    p.add_argument("--prompts", nargs="+", default=None)
    p.add_argument("--all-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if a.videos and Path(a.videos).exists():
        saved = torch.load(a.videos)
        videos, specs = saved["videos"], saved["specs"]
    else:
        if not a.models:
            p.error("--models: needed to make the clips (no --videos file)")
        videos, specs, figures = eval_videos(a.models, tuple(a.whole_clip_clips) if a.whole_clip_clips else None,
                                             a.seed, a.threads)
        print(json.dumps(figures, indent=1))
        if a.videos:
            torch.save({"videos": videos, "specs": specs}, a.videos)
    any_clip = next(iter(videos.values()))
    T, S = any_clip.shape[2], any_clip.shape[-1]
    # the ground truth exactly as the eval draws it (one generator over the run's specs)
    gt = LongMotionClips(size=S, frames=T, fps=E.WHOLE_CLIP_FPS, split="all").render_specs(
        specs, torch.Generator().manual_seed(a.seed), T, S)
    videos = {**videos, "ground_truth": gt}
    prompts = [long_caption(s) for s in specs]
    shown = a.prompts or [next(q for q, s in zip(prompts, specs) if "tempo" in s),
                          next(q for q, s in zip(prompts, specs) if "event" in s)]
    title = f'"{{}}" (held out), frames 0-{T - 1} at 16 fps, every {EVERY}th'.format
    blocks = [(title(q), specs[prompts.index(q)], [(label, videos[k][prompts.index(q)]) for k, label in ROWS])
              for q in shown]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    picture(blocks, {title(q): gt[prompts.index(q)] for q in shown}).save(a.out, optimize=True)
    print(f"wrote {a.out}")
    if a.all_dir:
        Path(a.all_dir).mkdir(parents=True, exist_ok=True)
        for i, q in enumerate(prompts):
            out = Path(a.all_dir) / f"clip_{i:02d}.png"
            picture([(f'"{q}"', specs[i], [(label, videos[k][i]) for k, label in ALL_ROWS if k in videos])],
                    {f'"{q}"': gt[i]}).save(out)
            print(f"wrote {out}")


if __name__ == "__main__":
    main()
