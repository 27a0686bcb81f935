"""Frames of teacher vs distilled student clips as PNG grids, to look at (issue 20).

The clips are the distill eval's own (`lumiere.distill_eval`: the same held-out prompts, seeds, batches and bf16
autocast), for the first --clips prompts: per prompt, one row per model (teacher at 25 steps cfg 4, student at its
recorded steps, student at 8 trailing steps), every frame left to right. With --ssr also the SSR: ground truth,
bicubic, teacher SSR, distilled SSR, distilled SSR in one call (frames 0, 5, 10, 15).

  OMP_NUM_THREADS=1 python scripts/distill_grids.py --student runs/gpu/distill_base/model.safetensors \\
      --ssr-student runs/gpu/distill_ssr/model.safetensors --out runs/distill_eval
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lumiere.checkpoint import load_model  # noqa: E402
from lumiere.compute import set_threads  # noqa: E402
from lumiere.data.procedural import caption  # noqa: E402
from lumiere.distill_eval import STUDENT_MORE_STEPS, interleaved  # noqa: E402
from lumiere.data.procedural import eval_specs  # noqa: E402
from lumiere.eval import BASE, DEFAULT_MODELS, SSR  # noqa: E402
from lumiere.metrics import (analyse, bicubic_video, data_max_speed, ground_truth, jumps,  # noqa: E402
                             ssr_ground_truth)
from lumiere.pipeline import sampling_defaults, upscale  # noqa: E402


def to_image(frame: torch.Tensor, zoom: int) -> Image.Image:
    a = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    im = Image.fromarray(a)
    return im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)


def grid(rows: list[tuple[str, torch.Tensor]], frames: list[int], zoom: int, label_w: int = 150) -> Image.Image:
    """rows: (label, video (3, t, h, w)); one row per video, the given frames left to right."""
    h, w = rows[0][1].shape[-2] * zoom, rows[0][1].shape[-1] * zoom
    out = Image.new("RGB", (label_w + len(frames) * (w + 2), len(rows) * (h + 2)), (255, 255, 255))
    d = ImageDraw.Draw(out)
    for r, (label, v) in enumerate(rows):
        y = r * (h + 2)
        d.text((4, y + h // 2 - 6), label, fill=(0, 0, 0))
        for c, f in enumerate(frames):
            out.paste(to_image(v[:, f], zoom), (label_w + c * (w + 2), y))
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=str(DEFAULT_MODELS))
    p.add_argument("--student", required=True)
    p.add_argument("--ssr-student", default=None)
    p.add_argument("--clips", type=int, default=8, help="the eval's first N held-out prompts (batches of 4)")
    p.add_argument("--per-combo", type=int, default=4, help="as the eval run (sets the order of the prompts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/distill_eval")
    a = p.parse_args()
    set_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    models = Path(a.models)
    teacher, stu = load_model(models / BASE), load_model(a.student)
    rec = sampling_defaults(stu.config)
    more = dict(steps=STUDENT_MORE_STEPS, cfg=rec["cfg"], sampler=rec["sampler"], scheduler=rec["scheduler"])
    specs = eval_specs(a.per_combo)[:a.clips]
    prompts = [caption(**s) for s in specs]
    gt = ground_truth(specs, teacher.config.num_frames, teacher.config.resolution, a.seed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vids, _, _ = interleaved({"teacher": (teacher, {}), "student": (stu, {}),
                                  f"student_{STUDENT_MORE_STEPS}step": (stu, more)}, prompts, 4, a.seed)
    T = teacher.config.num_frames
    names = {"teacher": "teacher 25 st cfg4", "student": f"student {rec['steps']} st cfg{rec['cfg']:g}",
             f"student_{STUDENT_MORE_STEPS}step": f"student {STUDENT_MORE_STEPS} st"}
    speed = data_max_speed(teacher.config.resolution, T)

    def reading(v, spec):  # what the eval's readers see: the shape and direction read, and a jump
        a = analyse(v)
        wrong = [k for k in ("colour", "shape", "direction") if a[k] != spec[k]]
        return (f" {a['shape']} {a['direction']}" + (" JUMP" if jumps(v, speed)["jump"] else "")
                + (" x" + ",".join(wrong) if wrong else ""))

    for i, prompt in enumerate(prompts):
        rows = [("truth", gt[i])] + [(names[k] + "\n" + reading(v[i], specs[i]), v[i]) for k, v in vids.items()]
        im = grid(rows, list(range(T)), 3)
        ImageDraw.Draw(im).text((4, 2), prompt[:24], fill=(200, 0, 0))
        im.save(out / f"t2v_{i:02d}.png")
        print(out / f"t2v_{i:02d}.png", prompt)
    if a.ssr_student:
        t_ssr, s_ssr = load_model(models / SSR), load_model(a.ssr_student)
        hi, lo = ssr_ground_truth(specs[:2], T, teacher.config.resolution, t_ssr.config.scale, a.seed + 1)
        win = t_ssr.config.num_frames
        for i in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                up = {name: upscale(b, lo[i:i + 1], prompts[i], window=win, overlap=win // 2, fuse="flat",
                                    seed=a.seed + i, **kw)[0].float()
                      for name, b, kw in (("teacher SSR 20st d0.3", t_ssr, {}), ("student SSR 2st", s_ssr, {}),
                                          ("student SSR 1 call", s_ssr, {"denoise": 0.5}))}
            rows = [("truth 64px", hi[i]), ("bicubic", bicubic_video(lo[i:i + 1], t_ssr.config.scale)[0])]
            rows += list(up.items())
            grid(rows, [0, 5, 10, 15], 3).save(out / f"ssr_{i:02d}.png")
            print(out / f"ssr_{i:02d}.png", prompts[i])
    return 0


if __name__ == "__main__":
    sys.exit(main())
