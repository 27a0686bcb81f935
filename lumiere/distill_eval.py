"""Few-step distilled models against their teachers (issue 20): `python -m lumiere eval --sections distill`.

One run, teacher and student side by side on the same held-out prompts, seeds and readers as the eval's
text-to-video section (`lumiere.eval`):
- text-to-video: direction / colour / shape accuracy, jump rate, flicker of the teacher at its default (25 DDIM
  steps, cfg 4) and of the student at what its checkpoint records (`ModelConfig.sampling`: e.g. 4 trailing steps,
  cfg 1), and of the same student at STUDENT_MORE_STEPS trailing steps (the cheap "8-step option"); and of the
  teacher itself at the student's steps, grid and cfg (`teacher_at_student_steps`: what the same calls give
  without distillation);
- image-to-video (the ⟨J, C, M⟩ task the workflows use most), with known-pixel replacement: frame-0 PSNR,
  direction of the continuation, jumps;
- network evaluations per clip, counted at the network (a guided step is two: conditional + unconditional), and
  seconds per clip, teacher and student batches interleaved so a slow moment of the machine hits both alike (the
  speed-up is the median of the per-batch ratios);
- SSR: PSNR to the true high-res clips of bicubic, the teacher SSR (its default: 20 steps from denoise 0.3) and
  the distilled SSR at its record (2 trailing steps from noise) and from the up-sampled input at the grid's last
  level (1 call, denoise 0.5 on the 2-step grid).
The targets are the issue's, relative to the teacher (`distill_targets`); every figure is reported, met or not.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from . import conditioning as cond_lib
from .checkpoint import LumiereBundle, load_model
from .metrics import adherence, analyse, bicubic_video, flicker, psnr, ssr_ground_truth
from .pipeline import generate, sampling_defaults, upscale

STUDENT_BASE, STUDENT_SSR = "lumiere_demo_base_4step.safetensors", "lumiere_demo_ssr_2step.safetensors"
STUDENT_MORE_STEPS = 8
DISTILL_I2V_CLIPS, DISTILL_SSR_CLIPS = 12, 8


@contextmanager
def counting_calls(bundle: LumiereBundle):
    """Counts the network evaluations of `bundle`'s model: the clips each forward runs (a guided forward runs the
    conditional and unconditional clip in one batch: two). Yields a dict whose "evals" grows."""
    box = {"evals": 0, "forwards": 0}

    def hook(_module, args, _out):
        box["evals"] += int(args[0].shape[0])
        box["forwards"] += 1

    handle = bundle.model.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def interleaved(models: dict, prompts: list[str], batch: int, seed: int, **kw) -> tuple[dict, dict, dict]:
    """Each model's clips for `prompts` (dict name -> (bundle, sampling kwargs)), generated batch by batch with
    the models interleaved: (videos, seconds per batch, network evaluations per clip)."""
    vids = {k: [] for k in models}
    secs = {k: [] for k in models}
    evals = {k: 0 for k in models}
    for i in range(0, len(prompts), batch):
        p = prompts[i:i + batch]
        per_clip = {k: v[i:i + len(p)] for k, v in kw.items() if isinstance(v, torch.Tensor)}
        rest = {k: v for k, v in kw.items() if not isinstance(v, torch.Tensor)}
        for name, (bundle, sampling) in models.items():
            with counting_calls(bundle) as box:
                v, s = _timed(lambda: generate(bundle, p, seed=seed + i, **sampling, **per_clip, **rest).cpu())
            vids[name].append(v)
            secs[name].append(s / len(p))
            evals[name] += box["evals"]
    return ({k: torch.cat(v) for k, v in vids.items()}, secs,
            {k: round(evals[k] / len(prompts), 2) for k in models})


def speedup(secs: dict, slow: str, fast: str) -> float:
    """The median over batches of slow / fast seconds per clip (each pair ran back to back)."""
    return round(statistics.median(a / b for a, b in zip(secs[slow], secs[fast])), 2)


def distill_section(run, ssr_teacher: Path, student: str | Path | None = None,
                    ssr_student: str | Path | None = None) -> dict:
    """Teacher (the run's base, at its own defaults) against the distilled student(s); see the module doc."""
    student = Path(student) if student else run.models / STUDENT_BASE
    ssr_student = Path(ssr_student) if ssr_student else run.models / STUDENT_SSR
    res: dict = {}
    if not student.exists():
        res["missing"] = str(student)
        return res
    stu = load_model(student, run.device)
    rec = sampling_defaults(stu.config)
    teacher_sampling = sampling_defaults(run.base.config)
    if run.base.config.sampling:
        raise ValueError("distill: the run's base is itself a distilled model; point --models at the teachers")
    more = dict(steps=STUDENT_MORE_STEPS, cfg=rec["cfg"], sampler=rec["sampler"], scheduler=rec["scheduler"])
    same = dict(steps=rec["steps"], cfg=rec["cfg"], sampler=rec["sampler"], scheduler=rec["scheduler"])
    models = {"teacher": (run.base, {}), "student": (stu, {}), f"student_{STUDENT_MORE_STEPS}step": (stu, more),
              "teacher_at_student_steps": (run.base, same)}
    res["settings"] = {"teacher": {k: teacher_sampling[k] for k in ("steps", "cfg", "sampler", "scheduler")},
                       "student": {k: rec[k] for k in ("steps", "cfg", "sampler", "scheduler")},
                       f"student_{STUDENT_MORE_STEPS}step": {k: more[k] for k in ("steps", "cfg", "sampler",
                                                                                   "scheduler")},
                       "student_file": str(student), "distilled": stu.config.sampling.get("distilled"),
                       "clips": len(run.specs), "batch": run.batch}
    run.log(f"[eval] distill: text-to-video, {len(run.specs)} clips, teacher / student / "
            f"student at {STUDENT_MORE_STEPS} steps / teacher at the student's steps interleaved")
    vids, secs, evals = interleaved(models, run.prompts, run.batch, run.seed)
    t2v = {}
    for name, v in vids.items():
        a = [analyse(x) for x in v]
        t2v[name] = {**adherence(a, run.specs), "flicker": round(flicker(v), 4), "jump_rate": run.jump_rate(v),
                     "network_evals_per_clip": evals[name],
                     "seconds_per_clip": round(statistics.median(secs[name]), 3)}
        run.videos[f"distill_{name}"] = v
    for name in models:
        if name != "teacher":
            t2v[name]["speedup_vs_teacher"] = speedup(secs, "teacher", name)
            t2v[name]["psnr_to_teacher"] = round(psnr(vids[name], vids["teacher"]), 2)
    res["text_to_video"] = t2v

    # image-to-video with known-pixel replacement (the workflows' default) on the first clips
    n = 2 if run.quick else min(DISTILL_I2V_CLIPS, len(run.specs))
    g, specs = run.gt[:n], run.specs[:n]
    C, M = cond_lib.image_to_video(g[:, :, 0], run.frames)
    run.log(f"[eval] distill: image-to-video, {n} clips")
    i2v_models = {k: models[k] for k in ("teacher", "student")}
    ivids, isecs, ievals = interleaved(i2v_models, run.prompts[:n], run.batch, run.seed, C=C, M=M,
                                       replace_known=True)
    res["image_to_video"] = {name: {
        "frame0_psnr": round(psnr(v[:, :, 0], g[:, :, 0]), 2),
        "direction_acc": adherence([analyse(x[:, 1:]) for x in v], specs)["direction_acc"],
        "jump_rate": run.jump_rate(v), "flicker": round(flicker(v), 4),
        "network_evals_per_clip": ievals[name]} for name, v in ivids.items()}
    res["image_to_video"]["clips"] = n
    for name, v in ivids.items():
        run.videos[f"distill_i2v_{name}"] = v

    res["ssr"] = ssr_figures(run, ssr_student, ssr_teacher)
    res["targets"] = distill_targets(res)
    return res


def ssr_figures(run, ssr_student: Path, ssr_teacher: Path) -> dict:
    if not ssr_student.exists() or not ssr_teacher.exists():
        return {"missing": str(ssr_student if not ssr_student.exists() else ssr_teacher)}
    teacher, stu = load_model(ssr_teacher, run.device), load_model(ssr_student, run.device)
    sc = teacher.config
    n = 1 if run.quick else DISTILL_SSR_CLIPS
    run.log(f"[eval] distill: SSR, {n} clips")
    hi, lo = ssr_ground_truth(run.specs[:n], run.frames, run.size, sc.scale, run.seed + 1)
    win = sc.num_frames
    rec = sampling_defaults(stu.config)
    variants = {"teacher": (teacher, {}), "teacher_denoise1": (teacher, {"denoise": 1.0}),
                "student": (stu, {}), "student_1call": (stu, {"denoise": 0.5})}
    out = {"clips": n, "window": win, "overlap": win // 2,
           "psnr_bicubic": round(psnr(bicubic_video(lo, sc.scale), hi), 2)}
    secs = {k: [] for k in variants}
    vids = {k: [] for k in variants}
    evals = {k: 0 for k in variants}
    for i in range(n):
        for name, (bundle, kw) in variants.items():
            with counting_calls(bundle) as box:
                v, s = _timed(lambda: upscale(bundle, lo[i:i + 1], run.prompts[i], window=win, overlap=win // 2,
                                              fuse="flat", seed=run.seed + i, **kw).cpu())
            vids[name].append(v)
            secs[name].append(s)
            evals[name] += box["evals"]
    windows = len(range(0, run.frames - win + 1, win // 2))
    for name, (bundle, kw) in variants.items():
        d = {**sampling_defaults(bundle.config), **kw}
        v = torch.cat(vids[name])
        out[name] = {"steps": d["steps"], "denoise": d["denoise"], "scheduler": d["scheduler"],
                     "psnr": round(psnr(v, hi), 2),
                     "gain_over_bicubic_db": round(psnr(v, hi) - out["psnr_bicubic"], 2),
                     "calls_per_clip": round(evals[name] / n / windows, 2),
                     "network_evals_per_clip": round(evals[name] / n, 2),
                     "seconds_per_clip": round(statistics.median(secs[name]), 3)}
        run.videos[f"distill_ssr_{name}"] = v
    out["student"]["speedup_vs_teacher"] = speedup(secs, "teacher", "student")
    out["student_1call"]["speedup_vs_teacher"] = speedup(secs, "teacher", "student_1call")
    out["recorded"] = {k: rec[k] for k in ("steps", "denoise", "scheduler")}
    run.videos["distill_ssr_truth"] = hi
    return out


def distill_targets(res: dict) -> dict:
    """The issue's targets for each student variant against the teacher: {variant: {target: {value, bound, met}}}."""
    t2v = res["text_to_video"]
    t = t2v["teacher"]
    out = {}
    for name, s in t2v.items():
        if name in ("teacher", "teacher_at_student_steps"):  # the latter: a reference, not a student
            continue
        rows = {
            "network_evals_per_clip": (s["network_evals_per_clip"], "<=", 8),
            "speedup_vs_teacher": (s["speedup_vs_teacher"], ">=", 6.0),
            "direction_acc": (s["direction_acc"], ">=", round(t["direction_acc"] - 0.05, 4)),
            "jump_rate": (s["jump_rate"], "<=", round(t["jump_rate"] + 0.03, 4)),
            "colour_acc": (s["colour_acc"], ">=", round(t["colour_acc"] - 0.05, 4)),
            "shape_acc": (s["shape_acc"], ">=", round(t["shape_acc"] - 0.05, 4)),
            "flicker": (s["flicker"], "<=", round(1.2 * t["flicker"], 4)),
        }
        out[name] = {k: {"value": v, "op": op, "bound": b, "met": bool(v <= b if op == "<=" else v >= b)}
                     for k, (v, op, b) in rows.items()}
    ssr = res.get("ssr", {})
    for name in ("student", "student_1call"):
        if name in ssr:
            s = ssr[name]
            out[f"ssr_{name}"] = {
                "calls_per_clip": {"value": s["calls_per_clip"], "op": "<=", "bound": 2,
                                   "met": s["calls_per_clip"] <= 2},
                "gain_over_bicubic_db": {"value": s["gain_over_bicubic_db"], "op": ">=", "bound": 1.0,
                                         "met": s["gain_over_bicubic_db"] >= 1.0}}
    return out
