"""Measured quality of the shipped demo models: `python -m lumiere eval --json [--models DIR] [--quick]`.

Everything is seeded and measured from pixels (the readers of `lumiere.metrics`) on held-out procedural prompts
(colour, shape, direction combos never seen in training):
- prompt adherence (colour / shape / motion-direction accuracy) of the STUNet against the per-frame T2I baseline
  (the same model's T2I weights run frame by frame with independent noise: `pipeline.FramewiseT2I`) and against
  ground-truth clips (which validates the metrics themselves);
- temporal consistency: frame-to-frame flicker, object-size and object-colour stability, and the jump rate (the
  fraction of clips where the object leaps, vanishes or splits: `jumps`);
- the conditioning tasks, each both ways: the model's own output and with known-pixel replacement (what the
  ComfyUI nodes give by default): image-to-video frame-0 PSNR, direction accuracy and jump rate of the
  continuation; inpainting / outpainting known-region PSNR; cinemagraph static-region PSNR;
- SSR PSNR against the ground-truth high-resolution clip, next to bicubic up-sampling, over the start (denoise);
- MultiDiffusion: the frame-difference spike at a window boundary, disjoint windows against fused windows;
- frame-level tasks and long videos (`frames_section`): keyframe PSNR and the path between two keyframes,
  the loop seam, the continuity of an extension, and at LONG_FRAMES frames MultiDiffusion windows against
  repeated extension with a two-direction prompt schedule (boundary spike, jumps, drift, direction per segment),
  and the peak memory of a long generation at two lengths;
- a user's own photo (`camera_section`): image-to-video with a camera prompt ("the camera pans left") on photos
  never trained on: frame 0 kept, the camera motion read from pixels, the continuation against the true clip;
- motion that needs the whole clip (`whole_clip_section`): 80 frames at 16 fps on held-out periodic
  and whole-clip prompts, the STUNet-80 in one pass against a temporal cascade (keyframes at 4 fps + TSR windows)
  and the 16-frame base over 80 frames (MultiDiffusion, extension): period error, aliasing (frozen or reversed
  motion), jumps, identity in the first and last quarter, direction, speed constancy, flicker, FLOPs and seconds;
- initialization ablation: temporal-stage loss after N steps, identity (the paper) against He-initialized
  temporal resampling convs, same data and noise;
- stylization: a style statistic (warmth, mean R - B) at several interpolation weights alpha, and colour / shape
  accuracy of the stylized model.

`TARGETS` is the one table of targets; `summary` and `met` are derived from it (`summarize`).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import operator
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch

from . import conditioning as cond_lib
from .cascade import generate_cascade
from .checkpoint import LumiereBundle, load_model
from .compute import add_device_arg, add_threads_arg, keep_freed_memory, resolve_device, set_threads
from .data.camera import CAMERA_CLIPS_PER_PHOTO, camera_clips
from .data.longmotion import PERIOD_SECONDS, LongMotionClips, heldout_events, heldout_periodic, long_caption
from .data.procedural import BG_NAMES, DIR_VEC, caption, eval_specs, heldout_combos
from .data.real import CLIP_CAPTION, RealClips
from .data.style import style_statistic, style_transform
from .distill_eval import distill_section
from .flops import count_flops
from .memory import peak_bytes
from .metrics import (JUMP_SPEED_FACTOR, adherence, analyse, bicubic_video, boundary_spike, camera_figures,
                      data_max_speed, flicker, ground_truth, jumps, object_pixels, psnr, seam_ratio,
                      ssr_ground_truth)
from .models.unet2d import UNet2D
from .multidiffusion import window_starts
from .pipeline import (SSR_DENOISE, downsample_video, generate, generate_extended, generate_long, run_batches,
                       sampling_defaults, upsample_video, upscale)
from .stylize import stylize
from .train.trainer import TrainState

DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models" / "lumiere"
DEFAULT_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos" / "heldout"  # scripts/fetch_photos.py
BASE, SSR, STYLE = "lumiere_demo_base.safetensors", "lumiere_demo_ssr.safetensors", "lumiere_demo_style.safetensors"
PHOTO_BASE, PHOTO_SSR = "lumiere_photo_base.safetensors", "lumiere_photo_ssr.safetensors"
LONG80, CASCADE_KEYFRAMES = "lumiere_long80_base.safetensors", "lumiere_cascade_keyframes.safetensors"
CASCADE_TSR, WINDOWS16 = "lumiere_cascade_tsr.safetensors", "lumiere_windows16_base.safetensors"
DEFAULT_REAL = Path(__file__).resolve().parents[1] / "data" / "real"  # scripts/fetch_media.py


# ---- the targets: one declarative table; `summary` and `met` are derived from it ---------------------------------
@dataclass(frozen=True)
class Figure:
    """A summary figure: `name` in summary, read at the dotted `path` of the result. With `op` and `target` it is
    a target (met = value op target); without, a reference figure next to them."""

    name: str
    path: str
    op: str | None = None
    target: float | bool | None = None


OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}
# the model's own conditioning figures (no replacement) carry the targets: with replacement the known pixels are
# exact by construction (reported as *_replaced next to them)
TARGETS: tuple[Figure, ...] = (
    Figure("direction_acc", "text_to_video.stunet.direction_acc", ">=", 0.85),
    Figure("jump_rate", "text_to_video.stunet.jump_rate", "<=", 0.05),
    Figure("shape_acc", "text_to_video.stunet.shape_acc", ">=", 0.85),
    Figure("colour_acc", "text_to_video.stunet.colour_acc", ">=", 0.95),
    Figure("i2v_frame0_psnr", "conditioning.image_to_video.model.frame0_psnr", ">=", 30.0),
    Figure("i2v_direction_acc", "conditioning.image_to_video.model.direction_acc", ">=", 0.80),
    Figure("i2v_direction_acc_replaced", "conditioning.image_to_video.replaced.direction_acc", ">=", 0.80),
    Figure("inpaint_known_psnr", "conditioning.inpaint.model.known_region_psnr", ">=", 35.0),
    Figure("outpaint_known_psnr", "conditioning.outpaint.model.known_region_psnr", ">=", 35.0),
    Figure("cinemagraph_static_psnr", "conditioning.cinemagraph.model.static_region_psnr", ">=", 35.0),
    Figure("ssr_gain_over_bicubic_db", "ssr.gain_over_bicubic_db", ">=", 1.0),
    Figure("stylized_colour_drop", "stylization.colour_drop_max", "<=", 0.10),
    Figure("stylized_shape_drop", "stylization.shape_drop_max", "<=", 0.10),
    Figure("style_monotonic", "stylization.monotonic", "==", True),
    Figure("md_spike", "multidiffusion.spike_ratio_multidiffusion", "<=", 1.2),
    Figure("camera_direction_acc", "camera.model.direction_acc", ">=", 0.80),
    Figure("camera_direction_acc_replaced", "camera.replaced.direction_acc", ">=", 0.80),
    Figure("camera_frame0_psnr", "camera.model.frame0_psnr", ">=", 30.0),
    Figure("photo_camera_direction_acc", "photo.camera.model.direction_acc", ">=", 0.70),
    Figure("photo_camera_continuation_gain_db", "photo.camera.model.continuation_gain_db", ">=", 2.0),
    Figure("photo_ssr_gain_over_bicubic_db", "photo.ssr.photo.gain_over_bicubic_db", ">=", 0.5),
    Figure("photo_inpaint_gain_over_telea_db", "photo.inpaint.gain_over_telea_db", ">=", 0.0),
    Figure("photo_inpaint_known_exact", "photo.inpaint.known_exact", "==", True),
    Figure("photo_v2v_psnr_to_input", "photo.video_to_video.psnr_to_input", ">=", 20.0),
    Figure("loop_seam_ratio", "frames.loop.seam_ratio_loop", "<=", 1.2),
    Figure("long_md_spike", "frames.long.multidiffusion.boundary_spike", "<=", 1.2),
    Figure("long_extension_spike", "frames.long.extension.boundary_spike", "<=", 1.2),
    Figure("whole_clip_period_error", "whole_clip.stunet80.period_error", "<=", 0.10),
    Figure("whole_clip_period_error_lowest", "whole_clip.stunet80_period_error_lowest", "==", True),
    Figure("whole_clip_aliased_clips", "whole_clip.stunet80.aliased_clips", "==", 0),
    Figure("whole_clip_jump_rate", "whole_clip.stunet80.jump_rate", "<=", 0.05),
    Figure("whole_clip_identity_acc", "whole_clip.stunet80.identity_acc", ">=", 0.95),
    Figure("whole_clip_direction_acc", "whole_clip.stunet80.direction_acc", ">=", 0.90),
)
REFERENCES: tuple[Figure, ...] = (
    Figure("direction_acc_framewise", "text_to_video.framewise_t2i.direction_acc"),
    Figure("colour_acc_framewise", "text_to_video.framewise_t2i.colour_acc"),
    Figure("shape_acc_framewise", "text_to_video.framewise_t2i.shape_acc"),
    Figure("jump_rate_framewise", "text_to_video.framewise_t2i.jump_rate"),
    Figure("jump_rate_ground_truth", "text_to_video.ground_truth.jump_rate"),
    Figure("flicker", "text_to_video.stunet.flicker"),
    Figure("flicker_framewise", "text_to_video.framewise_t2i.flicker"),
    Figure("flicker_ground_truth", "text_to_video.ground_truth.flicker"),
    Figure("i2v_frame0_psnr_replaced", "conditioning.image_to_video.replaced.frame0_psnr"),
    Figure("i2v_jump_rate", "conditioning.image_to_video.model.jump_rate"),
    Figure("i2v_jump_rate_replaced", "conditioning.image_to_video.replaced.jump_rate"),
    Figure("inpaint_known_psnr_replaced", "conditioning.inpaint.replaced.known_region_psnr"),
    Figure("outpaint_known_psnr_replaced", "conditioning.outpaint.replaced.known_region_psnr"),
    Figure("cinemagraph_static_psnr_replaced", "conditioning.cinemagraph.replaced.static_region_psnr"),
    Figure("ssr_psnr", "ssr.psnr_ssr"),
    Figure("ssr_denoise", "ssr.denoise"),
    Figure("bicubic_psnr", "ssr.psnr_bicubic"),
    Figure("disjoint_spike", "multidiffusion.spike_ratio_disjoint"),
    Figure("style_value", "stylization.value"),
    Figure("keyframe_psnr", "frames.keyframes.model.keyframe_psnr"),
    Figure("keyframe_psnr_replaced", "frames.keyframes.replaced.keyframe_psnr"),
    Figure("keyframe_path_error_px", "frames.keyframes.replaced.path_error_px"),
    Figure("loop_seam_ratio_plain", "frames.loop.seam_ratio_plain"),
    Figure("extension_join_ratio", "frames.extension.join_ratio"),
    Figure("long_md_segment_direction_acc", "frames.long.multidiffusion.segment_direction_acc"),
    Figure("long_extension_segment_direction_acc", "frames.long.extension.segment_direction_acc"),
    Figure("long_md_jump_rate", "frames.long.multidiffusion.jump_rate"),
    Figure("long_extension_jump_rate", "frames.long.extension.jump_rate"),
    Figure("long_peak_memory_mb", "frames.memory.peak_mb"),
    Figure("camera_continuation_psnr", "camera.replaced.continuation_psnr"),
    Figure("camera_still_frame_psnr", "camera.replaced.still_frame_psnr"),
    Figure("camera_direction_acc_ground_truth", "camera.ground_truth.direction_acc"),
    Figure("photo_camera_direction_acc_replaced", "photo.camera.replaced.direction_acc"),
    Figure("photo_camera_direction_acc_from_image", "photo.camera.from_image.direction_acc"),
    Figure("photo_camera_continuation_gain_db_from_image", "photo.camera.from_image.continuation_gain_db"),
    Figure("photo_camera_continuation_psnr", "photo.camera.model.continuation_psnr"),
    Figure("photo_camera_still_frame_psnr", "photo.camera.model.still_frame_psnr"),
    Figure("photo_camera_direction_acc_ground_truth", "photo.camera.ground_truth.direction_acc"),
    Figure("photo_inpaint_hole_psnr", "photo.inpaint.hole_psnr"),
    Figure("photo_inpaint_hole_psnr_telea", "photo.inpaint.hole_psnr_telea"),
    Figure("photo_ssr_psnr", "photo.ssr.photo.psnr"),
    Figure("photo_ssr_bicubic_psnr", "photo.ssr.psnr_bicubic"),
    Figure("photo_ssr_shapes_model_gain_db", "photo.ssr.shapes.gain_over_bicubic_db"),
    *(Figure(f"whole_clip_{fig}_{m}", f"whole_clip.{m}.{fig}")
      for m in ("cascade", "multidiffusion", "extension", "ground_truth")
      for fig in ("period_error", "aliased_clips", "jump_rate", "identity_acc", "direction_acc", "speed_cv")),
    *(Figure(f"whole_clip_{fig}_{m}", f"whole_clip.{m}.{fig}")
      for m in ("stunet80", "cascade", "multidiffusion", "extension")
      for fig in ("gflops_per_clip", "seconds_per_clip")),
    Figure("whole_clip_speed_cv", "whole_clip.stunet80.speed_cv"),
    # the distilled student against its teacher (the targets, relative to the teacher, with their met
    # flags: distill.targets)
    *(Figure(f"distill_{fig}_{m}", f"distill.text_to_video.{m}.{fig}")
      for m in ("teacher", "student", "student_8step", "teacher_at_student_steps")
      for fig in ("network_evals_per_clip", "direction_acc", "colour_acc", "shape_acc", "jump_rate", "flicker")),
    *(Figure(f"distill_speedup_{m}", f"distill.text_to_video.{m}.speedup_vs_teacher")
      for m in ("student", "student_8step")),
    Figure("distill_ssr_bicubic_psnr", "distill.ssr.psnr_bicubic"),
    *(Figure(f"distill_ssr_psnr_{m}", f"distill.ssr.{m}.psnr") for m in ("teacher", "student", "student_1call")),
)


def lookup(res: dict, path: str):
    """The value at a dotted path of the result, or None where a section is missing."""
    v = res
    for key in path.split("."):
        if not isinstance(v, dict) or key not in v:
            return None
        v = v[key]
    return v


def summarize(res: dict) -> tuple[dict, dict]:
    """(summary, met) from TARGETS and REFERENCES: every figure present, and met for every target present."""
    summary = {f.name: v for f in TARGETS + REFERENCES if (v := lookup(res, f.path)) is not None}
    met = {f.name: bool(OPS[f.op](summary[f.name], f.target)) for f in TARGETS if f.name in summary}
    return summary, met


def targets_table() -> list[dict]:
    return [{"name": f.name, "figure": f.path, "op": f.op, "target": f.target} for f in TARGETS]


# ---- the evaluation ---------------------------------------------------------------------------------------------
def t2i_bundle(base: LumiereBundle) -> LumiereBundle:
    """The per-frame baseline: the base model's own T2I weights, applied frame by frame (no temporal layers)."""
    return LumiereBundle(base.model.unet, base.text_encoder, base.config)


# clips per figure (full run / --quick)
CONDITIONING_CLIPS, SSR_CLIPS, STYLE_CLIPS, FRAME_TASK_CLIPS = 12, 8, 12, 8
PHOTO_CAMERA_SOURCES, PHOTO_CLIPS = 16, 12  # held-out stills (x 6 camera motions), held-out real clips
PHOTO_I2V_STRENGTH = 0.9  # image-to-video "from_image": SDEdit from the photo held still, as the photo workflow does
LONG_FRAMES, MEMORY_FRAMES = 64, (64, 256)
SSR_DENOISE_SWEEP = (1.0, 0.7, 0.5, 0.3)
STYLE_ALPHAS, STYLE_ACCURACY_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 0.5, 0.75)


@dataclass
class EvalRun:
    """What the sections share: the models folder, the base model, the held-out prompts and ground truth."""

    models: Path
    quick: bool
    seed: int
    log: Callable
    base: LumiereBundle
    specs: list[dict]
    prompts: list[str]
    gt: torch.Tensor
    steps: int
    device: torch.device = torch.device("cpu")
    cfg: float = 4.0
    batch: int = 4
    videos: dict = field(default_factory=dict)  # sections' outputs other sections reuse
    photos: Path | None = None  # the camera section's held-out photos
    real: Path | None = None  # the photo section's real media (held-out split)
    whole_clip_clips: tuple[int, int] | None = None  # the whole_clip section's (periodic, event) clips; None: all

    @property
    def frames(self) -> int:
        return self.base.config.num_frames

    @property
    def size(self) -> int:
        return self.base.config.resolution

    @cached_property
    def max_speed(self) -> float:
        return data_max_speed(self.size, self.frames)

    def gen(self, bundle, prompts, i, **kw):
        return generate(bundle, prompts, steps=self.steps, cfg=self.cfg, seed=self.seed + i, **kw).cpu()

    def gen_all(self, bundle, prompts, **kw):
        """All prompts in batches; per-clip tensors in kw (C, M) are sliced with their batch."""
        per_clip = {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}
        rest = {k: v for k, v in kw.items() if k not in per_clip}
        return torch.cat(run_batches(
            lambda p, i: self.gen(bundle, p, i, **{k: v[i:i + len(p)] for k, v in per_clip.items()}, **rest),
            prompts, self.batch))

    def jump_rate(self, videos: torch.Tensor) -> float:
        return round(sum(jumps(v, self.max_speed)["jump"] for v in videos) / len(videos), 4)


def text_to_video_section(run: EvalRun) -> dict:
    """Prompt adherence, temporal consistency and jumps: STUNet vs per-frame T2I vs ground truth."""
    run.log(f"[eval] text-to-video: {len(run.specs)} held-out clips")
    vids = run.gen_all(run.base, run.prompts)
    run.log("[eval] per-frame T2I baseline")
    base_vids = run.gen_all(t2i_bundle(run.base), run.prompts)
    run.videos["stunet"] = vids
    rows = {}
    for name, v in (("stunet", vids), ("framewise_t2i", base_vids), ("ground_truth", run.gt)):
        a = [analyse(x) for x in v]
        rows[name] = {**adherence(a, run.specs), "flicker": round(flicker(v), 4), "jump_rate": run.jump_rate(v)}
        if name == "stunet":
            run.videos["stunet_analysis"] = a
    return rows


def conditioning_section(run: EvalRun) -> dict:
    """Image-to-video, inpainting, outpainting, cinemagraph on held-out ground-truth clips, each both ways: the
    model's own output ("model") and with known-pixel replacement ("replaced", what the ComfyUI nodes give)."""
    n = 2 if run.quick else CONDITIONING_CLIPS
    g, prompts, specs, T, S = run.gt[:n], run.prompts[:n], run.specs[:n], run.frames, run.size
    run.log(f"[eval] conditioning tasks: {n} clips, with and without replacement")

    def both(C, M, figures) -> dict:
        out = {}
        for key, replace in (("model", False), ("replaced", True)):
            v = run.gen_all(run.base, prompts, C=C, M=M, replace_known=replace)
            out[key] = {**figures(v), "known_exact": bool(torch.equal(v * M, C * M))}
        return out

    def i2v(v):
        # direction of the continuation: frames 1.. only (the given frame starts near the wall the object moves
        # away from, so counting it would reward any drift away from that wall); jumps over the whole clip
        # (frame 0 -> 1 included: where a model that ignores the given frame leaps)
        return {"frame0_psnr": round(psnr(v[:, :, 0], g[:, :, 0]), 2),
                "direction_acc": adherence([analyse(x[:, 1:]) for x in v], specs)["direction_acc"],
                "jump_rate": run.jump_rate(v), "flicker": round(flicker(v), 4)}

    tasks = {"clips": n}
    C, M = cond_lib.image_to_video(g[:, :, 0], T)
    tasks["image_to_video"] = both(C, M, i2v)
    known = torch.ones(S, S)
    known[S // 4: 3 * S // 4, S // 4: 3 * S // 4] = 0
    C, M = cond_lib.inpaint(g, known)
    tasks["inpaint"] = both(C, M, lambda v: {"known_region_psnr": round(psnr(v, g, M), 2),
                                             "unknown_region_psnr": round(psnr(v, g, 1 - M), 2)})
    p = S // 8
    C, M = cond_lib.outpaint(g[:, :, :, p:S - p, p:S - p], (p, p, p, p))
    tasks["outpaint"] = {"pad_px": p, **both(C, M, lambda v: {"known_region_psnr": round(psnr(v, g, M), 2),
                                                              "unknown_region_psnr": round(psnr(v, g, 1 - M), 2)})}
    # the animated region: the box around the object's path (so the rest of the clip is truly static)
    region = torch.stack([cond_lib.motion_region(x, margin=1) for x in g])[:, None, None]  # (b, 1, 1, h, w)
    C, M = cond_lib.cinemagraph(g[:, :, 0], region, T)
    tasks["cinemagraph"] = both(C, M, lambda v: {"static_region_psnr": round(psnr(v, C, M), 2)})
    return tasks


def ssr_section(run: EvalRun) -> tuple[dict, dict]:
    """SSR against the true high-res clip next to bicubic (at the shipped start `pipeline.SSR_DENOISE`, and over
    SSR_DENOISE_SWEEP), and the MultiDiffusion boundary spike, disjoint windows against fused windows."""
    ssr = load_model(run.models / SSR, run.device)
    sc = ssr.config
    T, S = run.frames, run.size
    n = 1 if run.quick else SSR_CLIPS
    run.log(f"[eval] SSR: {n} clips")
    hi, lo = ssr_ground_truth(run.specs[:n], T, S, sc.scale, run.seed + 1)
    s_hi = S * sc.scale
    steps = sc.sampling.get("steps", 4 if run.quick else 20)  # a distilled SSR: the steps its checkpoint records
    win = sc.num_frames

    def up(denoise, clip=None):  # flat fusion: the setting the recorded figures were measured with
        clip = clip if clip is not None else (lambda i: lo[i:i + 1])
        return torch.cat([upscale(ssr, clip(i), run.prompts[i], window=win, overlap=win // 2, fuse="flat",
                                  steps=steps, seed=run.seed + i, denoise=denoise).cpu() for i in range(n)])

    shipped = up(SSR_DENOISE)
    sweep = {SSR_DENOISE: shipped}
    for d in ([] if run.quick else SSR_DENOISE_SWEEP):
        if d not in sweep:
            sweep[d] = up(d)
    res = {"clips": n, "size_in": S, "size_out": s_hi, "window": win, "overlap": win // 2, "steps": steps,
           "denoise": SSR_DENOISE, "psnr_ssr": round(psnr(shipped, hi), 2),
           "psnr_by_denoise": {str(d): round(psnr(v, hi), 2) for d, v in sorted(sweep.items(), reverse=True)},
           "psnr_bicubic": round(psnr(bicubic_video(lo, sc.scale), hi), 2),
           "psnr_bilinear": round(psnr(upsample_video(lo, sc.scale), hi), 2)}
    res["gain_over_bicubic_db"] = round(res["psnr_ssr"] - res["psnr_bicubic"], 2)
    # disjoint windows (no fusing) vs MultiDiffusion: frame differences around the window boundary
    disjoint = torch.cat([torch.cat([upscale(ssr, lo[i:i + 1, :, k:k + win], run.prompts[i], window=win,
                                             steps=steps, seed=run.seed + i, denoise=SSR_DENOISE).cpu()
                                     for k in range(0, T, win)], dim=2) for i in range(n)])
    bounds = list(range(win - 1, T - 1, win))  # transitions win-1 -> win, ...
    md = {"boundary_transitions": bounds, "spike_ratio_disjoint": round(boundary_spike(disjoint, bounds), 3),
          "spike_ratio_multidiffusion": round(boundary_spike(shipped, bounds), 3),
          "spike_ratio_ground_truth": round(boundary_spike(hi, bounds), 3),
          "psnr_disjoint": round(psnr(disjoint, hi), 2)}
    return res, md


def frames_section(run: EvalRun) -> dict:
    """Keyframes (first + last known: interpolation), loops, extension, and long videos with prompt travel."""
    n = 2 if run.quick else FRAME_TASK_CLIPS
    g, prompts, specs, T = run.gt[:n], run.prompts[:n], run.specs[:n], run.frames
    steps = run.steps
    run.log(f"[eval] keyframes, loops, extension, long videos: {n} clips")
    res = {"clips": n}
    # keyframes: PSNR at the two keyframes, and the object's path against the ground truth's in between
    C, M = cond_lib.keyframes(g[:, :, [0, T - 1]], [0, T - 1], T)
    _, _, _, gx, gy = zip(*[object_pixels(v) for v in g])
    res["keyframes"] = {}
    for key, replace in (("model", False), ("replaced", True)):
        v = run.gen_all(run.base, prompts, C=C, M=M, replace_known=replace)
        errs = []
        for i, x in enumerate(v):
            _, _, area, cx, cy = object_pixels(x)
            errs += [math.hypot(float(cx[k] - gx[i][k]), float(cy[k] - gy[i][k])) for k in range(T) if area[k] >= 3]
        res["keyframes"][key] = {"keyframe_psnr": round(psnr(v[:, :, [0, T - 1]], g[:, :, [0, T - 1]]), 2),
                                 "path_error_px": round(sum(errs) / max(1, len(errs)), 2),
                                 "jump_rate": run.jump_rate(v)}
    # loops: the seam with circular windows against a plain clip of the same prompt and seed
    loops = torch.cat([generate_long(run.base, p, T, loop=True, steps=steps, cfg=run.cfg, seed=run.seed + i).cpu()
                       for i, p in enumerate(prompts)])
    plain = run.videos.get("stunet")
    plain = plain[:n] if plain is not None else run.gen_all(run.base, prompts)
    res["loop"] = {"seam_ratio_loop": round(sum(map(seam_ratio, loops)) / n, 3),
                   "seam_ratio_plain": round(sum(map(seam_ratio, plain)) / n, 3),
                   "seam_ratio_ground_truth": round(sum(map(seam_ratio, g)) / n, 3),
                   "jump_rate_loop": run.jump_rate(loops),
                   "direction_acc_loop": adherence([analyse(x) for x in loops], specs)["direction_acc"]}
    # extension: the first half of the ground-truth clip continued by half a window; the join against the rest
    k = T // 2
    ext = torch.cat([generate_extended(run.base, p, T + k, clip=g[i:i + 1, :, :k], steps=steps, cfg=run.cfg,
                                       seed=run.seed + i).cpu() for i, p in enumerate(prompts)])
    res["extension"] = {"known_frames": k, "new_frames": T, "join_ratio": round(boundary_spike(ext, [k - 1]), 3),
                        "jump_rate_new": run.jump_rate(ext[:, :, k:]),
                        "direction_acc_new": adherence([analyse(x) for x in ext[:, :, k:]], specs)["direction_acc"]}
    # long videos: two segments (the held-out direction, then its opposite), MultiDiffusion vs repeated extension
    half, opposite = LONG_FRAMES // 2, {"left": "right", "right": "left", "up": "down", "down": "up"}
    second = [dict(s, direction=opposite[s["direction"]]) for s in specs]
    schedules = [f"0: {p}; {half}: {caption(**s2)}" for p, s2 in zip(prompts, second)]
    md_bounds = sorted({b for s in window_starts(LONG_FRAMES, T, T // 2)[1:] for b in (s - 1, s + T // 2 - 1)})
    ext_bounds = list(range(T - 1, LONG_FRAMES - 1, T - T // 2))
    res["long"] = {"frames": LONG_FRAMES, "window": T, "schedule": "0: held-out prompt; "
                   f"{half}: the same, opposite direction"}
    for name, make, bounds in (
            ("multidiffusion", lambda s, i: generate_long(run.base, s, LONG_FRAMES, steps=steps, cfg=run.cfg,
                                                          seed=run.seed + i), md_bounds),
            ("extension", lambda s, i: generate_extended(run.base, s, LONG_FRAMES, steps=steps, cfg=run.cfg,
                                                         seed=run.seed + i), ext_bounds)):
        v = torch.cat([make(s, i).cpu() for i, s in enumerate(schedules)])
        seg = [analyse(x[:, :half], half)["direction"] == s["direction"] for x, s in zip(v, specs)] + \
              [analyse(x[:, half:], half)["direction"] == s["direction"] for x, s in zip(v, second)]
        a = [analyse(x, LONG_FRAMES) for x in v]
        quarters = [adherence([analyse(x[:, j:j + LONG_FRAMES // 4]) for x in v], specs)["colour_acc"]
                    for j in (0, LONG_FRAMES - LONG_FRAMES // 4)]
        res["long"][name] = {"boundary_transitions": bounds, "boundary_spike": round(boundary_spike(v, bounds), 3),
                             "jump_rate": run.jump_rate(v), "segment_direction_acc": round(sum(seg) / len(seg), 4),
                             "size_cv": round(sum(x["size_cv"] for x in a) / n, 4),
                             "colour_acc_first_last_quarter": quarters}
    # memory: bounded by one window whatever the length (one step is enough to see the peak)
    peaks = [peak_bytes(lambda f=f: generate_long(run.base, prompts[0], f, steps=1, cfg=run.cfg), run.device)
             for f in MEMORY_FRAMES]
    res["memory"] = {"frames": list(MEMORY_FRAMES), "peak_mb": [round(p / 2 ** 20, 1) for p in peaks]}
    return res


def stylization_section(run: EvalRun) -> dict:
    """The style statistic (warmth) against alpha, and colour / shape accuracy at STYLE_ACCURACY_ALPHAS (does the
    stylized model still draw what the prompt asks?). Alpha 0 is the base model bit for bit: its clips are the
    text-to-video section's."""
    run.log("[eval] stylization")
    style = load_model(run.models / STYLE)
    sd = style.model.state_dict()
    base = run.base
    orig = {k: v.clone() for k, v in base.model.unet.state_dict().items()}
    alphas = (0.0, 0.5, 0.75, 1.0) if run.quick else STYLE_ALPHAS
    n = 1 if run.quick else STYLE_CLIPS
    prompts, specs = run.prompts[:n], run.specs[:n]
    stat, acc = [], {}
    try:
        for al in alphas:
            if al == 0.0 and "stunet" in run.videos:
                v = run.videos["stunet"][:n]
            else:
                base.model.unet.load_state_dict(orig)
                stylize(base.model, sd, al)
                v = run.gen_all(base, prompts)
            stat.append(round(style_statistic(v), 4))
            if al in STYLE_ACCURACY_ALPHAS:
                row = adherence([analyse(x) for x in v], specs)
                acc[str(al)] = {k: row[k] for k in ("colour_acc", "shape_acc", "direction_acc")}
    finally:
        base.model.unet.load_state_dict(orig)
    mono = all(b >= a for a, b in zip(stat, stat[1:])) or all(b <= a for a, b in zip(stat, stat[1:]))
    # what the same classifier reads on the ground truth blended with its stylized version at each alpha: the
    # style (sepia) itself removes hue, so part of any colour drop is the style's, not the model's
    gt, styled = run.gt[:n], style_transform(run.gt[:n].transpose(1, 2)).transpose(1, 2)
    reference = {}
    for al in STYLE_ACCURACY_ALPHAS:
        row = adherence([analyse(x) for x in (1 - al) * gt + al * styled], specs)
        reference[str(al)] = {k: row[k] for k in ("colour_acc", "shape_acc")}
    ref = acc["0.0"]
    drops = {k: round(max(ref[k] - acc[a][k] for a in acc), 4) for k in ("colour_acc", "shape_acc")}
    return {"statistic": "warmth = mean(R - B) in 0..1", "clips": n, "alpha": list(alphas), "value": stat,
            "monotonic": mono, "accuracy": acc, "accuracy_ground_truth_blend": reference,
            "colour_drop_max": drops["colour_acc"], "shape_drop_max": drops["shape_acc"],
            "style_target_ground_truth": round(style_statistic(
                style_transform(run.gt[:n].transpose(1, 2)).transpose(1, 2)), 4),
            "ground_truth": round(style_statistic(run.gt[:n]), 4)}


def camera_section(run: EvalRun) -> dict:
    """A user's own photo: image-to-video with a camera prompt on held-out photos (`run.photos`; seeded textures
    where the folder is missing), each camera motion once per photo, both ways (the model's own output and with
    known-pixel replacement). Ground truth validates the motion reader."""
    per_source = 1 if run.quick else CAMERA_CLIPS_PER_PHOTO
    gt, prompts, specs = camera_clips(run.photos, run.size, run.frames, run.seed, per_source)
    if run.quick:
        gt, prompts, specs = gt[:2], prompts[:2], specs[:2]
    run.log(f"[eval] camera motion over {len({s['source'] for s in specs})} held-out images: {len(specs)} clips")
    C, M = cond_lib.image_to_video(gt[:, :, 0], run.frames)
    out = {"photos": str(run.photos) if run.photos and Path(run.photos).is_dir() else "procedural textures",
           "clips": len(specs), "ground_truth": {k: v for k, v in camera_figures(gt, gt, specs).items()
                                                 if k in ("direction_acc", "still_frame_psnr")}}
    for key, replace in (("model", False), ("replaced", True)):
        v = run.gen_all(run.base, prompts, C=C, M=M, replace_known=replace)
        run.videos[f"camera_{key}"] = v
        out[key] = camera_figures(v, gt, specs)
    return out


def telea_inpaint(video: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The classical baseline: OpenCV's Telea inpainting of every frame.  video (b, 3, t, h, w) in -1..1,
    known (h, w) 1 = kept -> (b, 3, t, h, w)."""
    import cv2  # opencv-python-headless: a measurement dependency of the eval only
    import numpy as np
    hole = ((1 - known) * 255).to(torch.uint8).numpy()
    frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    out = np.stack([[cv2.inpaint(np.ascontiguousarray(f), hole, 3, cv2.INPAINT_TELEA) for f in clip]
                    for clip in frames])
    return torch.from_numpy(out).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def photo_section(run: EvalRun) -> dict:
    """A user's own photo and footage, on held-out real files (`run.real`, `scripts/fetch_media.py`) with the
    photo-domain models: image-to-video with a camera prompt over held-out stills (the model's own output and
    with known-pixel replacement), SSR x2 on held-out real clips against bicubic, inpainting a box of held-out
    clips against OpenCV's Telea, and video-to-video at strength 0.5 (closeness to the input)."""
    path = run.models / PHOTO_BASE
    if not path.exists():
        return {"missing": str(path)}
    real = Path(run.real) if run.real else DEFAULT_REAL
    base = load_model(path, run.device)
    T, S = base.config.num_frames, base.config.resolution
    out: dict = {"model": PHOTO_BASE, "real": str(real)}
    # camera motion over held-out stills
    sources = 1 if run.quick else PHOTO_CAMERA_SOURCES
    gt, prompts, specs = camera_clips(real / "stills" / "heldout", S, T, run.seed, CAMERA_CLIPS_PER_PHOTO, sources)
    if run.quick:
        gt, prompts, specs = gt[:2], prompts[:2], specs[:2]
    run.log(f"[eval] photo: camera motion over {len({s['source'] for s in specs})} held-out stills, "
            f"{len(specs)} clips")
    C, M = cond_lib.image_to_video(gt[:, :, 0], T)
    cam = {"clips": len(specs), "ground_truth": {k: v for k, v in camera_figures(gt, gt, specs).items()
                                                 if k in ("direction_acc", "still_frame_psnr")}}
    still = gt[:, :, :1].expand_as(gt)  # the photo held for every frame: the start of "from_image"
    for key, replace, init in (("model", False, None), ("replaced", True, None), ("from_image", True, still)):
        kw = {} if init is None else {"init_video": init, "strength": PHOTO_I2V_STRENGTH}
        v = run.gen_all(base, prompts, C=C, M=M, replace_known=replace, **kw)
        run.videos[f"photo_camera_{key}"] = v
        figs = {k: x for k, x in camera_figures(v, gt, specs).items() if k != "reads"}
        figs["continuation_gain_db"] = round(figs["continuation_psnr"] - figs["still_frame_psnr"], 2)
        cam[key] = figs
    out["camera"] = cam
    # held-out real clips: 2S crops (the SSR's truth) and their area down-sampling (the base's size)
    n = 2 if run.quick else PHOTO_CLIPS
    hi = RealClips(real, size=2 * S, frames=T, fps=base.config.fps, split="heldout").clips(
        n, torch.Generator().manual_seed(20_000 + run.seed))[0]
    lo = downsample_video(hi, 2)
    run.videos["photo_real_clips"] = lo
    prompts = [CLIP_CAPTION] * n
    # inpainting a centre box, with known-pixel replacement (what the nodes give), against Telea
    known = torch.ones(S, S)
    known[S // 4: 3 * S // 4, S // 4: 3 * S // 4] = 0
    C, M = cond_lib.inpaint(lo, known)
    v = run.gen_all(base, prompts, C=C, M=M, replace_known=True)
    run.videos["photo_inpaint"] = v
    telea = telea_inpaint(lo, known)
    hole = 1 - M
    out["inpaint"] = {"clips": n, "hole_psnr": round(psnr(v, lo, hole), 2),
                      "hole_psnr_telea": round(psnr(telea, lo, hole), 2),
                      "known_exact": bool(torch.equal(v * M, C * M))}
    out["inpaint"]["gain_over_telea_db"] = round(out["inpaint"]["hole_psnr"] - out["inpaint"]["hole_psnr_telea"], 2)
    # video-to-video at strength 0.5
    v = run.gen_all(base, prompts, init_video=lo, strength=0.5)
    run.videos["photo_v2v"] = v
    out["video_to_video"] = {"clips": n, "strength": 0.5, "psnr_to_input": round(psnr(v, lo), 2)}
    # SSR x2 on real footage: the photo SSR where shipped, and the shapes SSR next to it
    steps = 4 if run.quick else 20
    ssr_out = {"clips": n, "denoise": SSR_DENOISE, "steps": steps,
               "psnr_bicubic": round(psnr(bicubic_video(lo, 2), hi), 2)}
    for key, name in (("photo", PHOTO_SSR), ("shapes", SSR)):
        if not (run.models / name).exists():
            continue
        ssr = load_model(run.models / name, run.device)
        win = ssr.config.num_frames
        own = sampling_defaults(ssr.config) if ssr.config.sampling else {}  # a distilled SSR: its recorded grid
        up = torch.cat([upscale(ssr, lo[i:i + 1], CLIP_CAPTION, window=win, overlap=win // 2, fuse="flat",
                                steps=own.get("steps", steps), seed=run.seed + i).cpu() for i in range(n)])
        run.videos[f"photo_ssr_{key}"] = up
        ssr_out[key] = {"model": name, "psnr": round(psnr(up, hi), 2),
                        "gain_over_bicubic_db": round(psnr(up, hi) - ssr_out["psnr_bicubic"], 2),
                        **({"steps": own["steps"], "denoise": own["denoise"]} if own else {})}
    out["ssr"] = ssr_out
    return out


# ---- motion that needs the whole clip: STUNet-80 against a temporal cascade and windows -------------
WHOLE_CLIP_FRAMES, WHOLE_CLIP_FPS, CASCADE_STRIDE = 80, 16, 4  # the paper's 5 s clip; keyframes at 4 fps
FROZEN_PX = 1.0  # a periodic path whose coordinate moves less than this (rms, px at 32) is frozen
PERIOD_GRID = torch.linspace(1 / 40, 1 / 2.5, 600)  # the frequencies searched (cycles / frame): periods 2.5..40


def periodic_reading(video: torch.Tensor, motion: str) -> dict:
    """The period (frames) and turning sense of one clip's (3, t, h, w) object path, from pixels: the peak of the
    path's spectrum over PERIOD_GRID, on the frames where the object is seen (x for swings, y for bobs and
    bounces, x + iy for orbits, whose sign is the sense: +1 clockwise on screen, the data's). `rms_px`: the
    path's spread about its mean on that coordinate; `frozen` when below FROZEN_PX."""
    _, _, area, cx, cy = object_pixels(video)
    seen = torch.nonzero(area >= 3).flatten()
    if len(seen) < 8:
        return {"period": float("nan"), "sign": 0, "rms_px": 0.0, "frozen": True}
    x, y = cx[seen] - cx[seen].mean(), cy[seen] - cy[seen].mean()
    z = torch.complex(x, y) if motion == "orbits" else torch.complex(x if motion == "swings" else y, 0 * x)
    freqs = torch.cat([-PERIOD_GRID.flip(0), PERIOD_GRID]) if motion == "orbits" else PERIOD_GRID
    phase = torch.exp(-2j * math.pi * freqs[:, None] * seen.float()[None])  # (f, n)
    power = (phase * z[None]).sum(1).abs()
    f = float(freqs[int(power.argmax())])
    rms = float(z.abs().pow(2).mean().sqrt())
    return {"period": 1 / abs(f), "sign": 1 if f > 0 else -1, "rms_px": round(rms, 2), "frozen": rms < FROZEN_PX}


def along_track(video: torch.Tensor, direction: str) -> torch.Tensor:
    """The object's centroid along `direction` (px, growing in that direction) per frame; NaN where unseen. (t,)"""
    _, _, area, cx, cy = object_pixels(video)
    dx, dy = DIR_VEC[direction]
    pos = cx * dx + cy * dy
    return torch.where(area >= 3, pos, torch.full_like(pos, float("nan")))


def slope(pos: torch.Tensor) -> float:
    """Least-squares px/frame of a track (NaNs left out; NaN with < 2 points)."""
    t = torch.nonzero(~pos.isnan()).flatten().float()
    if len(t) < 2:
        return float("nan")
    p = pos[t.long()]
    tc = t - t.mean()
    return float((tc * (p - p.mean())).sum() / (tc ** 2).sum().clamp(min=1e-6))


def event_reading(video: torch.Tensor, spec: dict) -> dict:
    """A crossing or rebound (spec: event, direction) from pixels: direction right (crosses: over the whole clip;
    rebounds: forward in the first half and back in the second), speed per quarter (px/frame along the
    direction), the speed's coefficient of variation over the quarters, and for a rebound the turn's frame."""
    pos = along_track(video, spec["direction"])
    t = pos.shape[0]
    q = t // 4
    speeds = [slope(pos[k * q:(k + 1) * q]) for k in range(4)]
    res = {"quarter_speeds": [round(s, 3) for s in speeds]}
    if spec["event"] == "crosses":
        s = torch.tensor(speeds)
        res["direction_ok"] = bool(slope(pos) * (t - 1) >= 1.0)
        res["speed_cv"] = round(min(1.0, float(s.std() / s.mean().abs().clamp(min=1e-6))), 3) \
            if not s.isnan().any() else float("nan")
    else:
        half = t // 2
        res["direction_ok"] = bool(slope(pos[:half]) * (half - 1) >= 1.0 and slope(pos[half:]) * (half - 1) <= -1.0)
        filled = torch.where(pos.isnan(), torch.full_like(pos, -1e9), pos)
        res["turn_frame"] = int(filled.argmax())
    return res


def identity_kept(video: torch.Tensor, spec: dict) -> bool:
    """Colour and shape of the prompt in the first and in the last quarter of the clip (3, t, h, w)."""
    q = video.shape[1] // 4
    return all(a["colour"] == spec["colour"] and a["shape"] == spec["shape"]
               for a in (analyse(video[:, :q]), analyse(video[:, -q:])))


def balanced_subset(specs: list[dict], n: int, keys: tuple[str, ...]) -> list[dict]:
    """n of `specs`, picked one at a time as the first whose values of `keys` have been picked least so far
    (the sum of their counts), so that every prefix spreads over each key's values as evenly as it can."""
    left, out, counts = list(specs), [], {}
    for _ in range(min(n, len(left))):
        best = min(left, key=lambda s: sum(counts.get((k, s[k]), 0) for k in keys))  # first of the least used
        left.remove(best)
        out.append(best)
        for k in keys:
            counts[(k, best[k])] = counts.get((k, best[k]), 0) + 1
    return out


def whole_clip_specs(n_per_combo: int, periodic: int | None = None, events: int | None = None) -> list[dict]:
    """The held-out prompts of both families (`lumiere.data.longmotion`), backgrounds black / gray. `periodic`,
    `events`: that many of each family instead (a quicker, balanced run: motions and tempos, events and
    directions spread evenly by `balanced_subset`); None: all of them (24 + 16 per combo)."""
    per, ev = [], []
    for k in range(n_per_combo):
        for i, (c, s, m, tempo) in enumerate(heldout_periodic()):
            per.append(dict(colour=c, shape=s, motion=m, tempo=tempo, background=BG_NAMES[(i + k) % 2]))
        for i, (c, s, e, d) in enumerate(heldout_events()):
            ev.append(dict(colour=c, shape=s, event=e, direction=d, background=BG_NAMES[(i + k + 1) % 2]))
    if periodic is None and events is None:  # the full set, in its order
        n_p, n_e = len(heldout_periodic()), len(heldout_events())
        return [x for k in range(n_per_combo) for x in per[k * n_p:(k + 1) * n_p] + ev[k * n_e:(k + 1) * n_e]]
    per = per if periodic is None else balanced_subset(per, periodic, ("motion", "tempo"))
    ev = ev if events is None else balanced_subset(ev, events, ("event", "direction"))
    return per + ev


def whole_clip_figures(videos: torch.Tensor, specs: list[dict], gt: torch.Tensor) -> dict:
    """The figures of one method's clips (b, 3, t, h, w) against the ground truth's paths (jumps: per clip, more
    than JUMP_SPEED_FACTOR x the ground truth's fastest move, at least 2 px at 32, or a vanished / split object).
    Period error |P - P_prompt| / P_prompt and speed CV are capped at 1 per clip (1: unreadable), so that one
    wild reading does not make the mean."""
    k = videos.shape[-1] / 32
    per, ev, jmp, ident = [], [], [], []
    for v, s, g in zip(videos, specs, gt):
        jmp.append(jumps(v, max(jumps(g, 1.0)["max_move_px"], 2.0 * k / JUMP_SPEED_FACTOR))["jump"])
        ident.append(identity_kept(v, s))
        if "tempo" in s:
            r = periodic_reading(v, s["motion"])
            want = PERIOD_SECONDS[s["tempo"]] * WHOLE_CLIP_FPS
            r["period_error"] = min(1.0, abs(r["period"] - want) / want) if not math.isnan(r["period"]) else 1.0
            r["aliased"] = bool(r["frozen"] or (s["motion"] == "orbits" and r["sign"] < 0))
            per.append((s, r))
        else:
            ev.append((s, event_reading(v, s)))
    res = {"clips": len(specs), "jump_rate": round(sum(jmp) / len(jmp), 4),
           "identity_acc": round(sum(ident) / len(ident), 4), "flicker": round(flicker(videos), 4)}
    if per:
        res["period_error"] = round(sum(r["period_error"] for _, r in per) / len(per), 4)
        res["period_error_by_tempo"] = {
            tempo: round(sum(r["period_error"] for s, r in per if s["tempo"] == tempo) /
                         max(1, sum(s["tempo"] == tempo for s, _ in per)), 4) for tempo in PERIOD_SECONDS}
        res["aliased_clips"] = sum(r["aliased"] for _, r in per)
        res["aliased_rate"] = round(res["aliased_clips"] / len(per), 4)
    if ev:
        res["direction_acc"] = round(sum(r["direction_ok"] for _, r in ev) / len(ev), 4)
        cvs = [r["speed_cv"] for s, r in ev if "speed_cv" in r and not math.isnan(r["speed_cv"])]
        res["speed_cv"] = round(sum(cvs) / len(cvs), 4) if cvs else float("nan")
        turns = [abs(r["turn_frame"] - videos.shape[2] / 2) for _, r in ev if "turn_frame" in r]
        res["rebound_turn_error_frames"] = round(sum(turns) / len(turns), 2) if turns else float("nan")
    return res


def whole_clip_section(run: EvalRun) -> dict:
    """80 frames at 16 fps on held-out periodic and whole-clip prompts, three ways from the same parts: the
    STUNet-80 in one pass, the temporal cascade (keyframe base at 4 fps + TSR windows: `lumiere.cascade`) and
    the 16-frame base over 80 frames (temporal MultiDiffusion and repeated extension); ground truth measured by
    the same readers. Compute per clip: FLOPs (one sampling step counted, x steps) and seconds. The windows run
    the 16-frame base trained beside them (WINDOWS16), or else the shipped base (8 fps, none of the new words)."""
    names = {"stunet80": LONG80, "keyframes": CASCADE_KEYFRAMES, "tsr": CASCADE_TSR}
    missing = [str(run.models / f) for f in names.values() if not (run.models / f).exists()]
    if missing:
        return {"missing": missing}
    m = {k: load_model(run.models / f, run.device) for k, f in names.items()}
    windows_file = WINDOWS16 if (run.models / WINDOWS16).exists() else BASE
    m["windows"] = load_model(run.models / windows_file, run.device) if windows_file != BASE else run.base
    T, S = WHOLE_CLIP_FRAMES, m["stunet80"].config.resolution
    specs = whole_clip_specs(1, *(run.whole_clip_clips or (None, None)))
    specs = specs[:2] + specs[len(heldout_periodic()):][:2] if run.quick and not run.whole_clip_clips else specs
    prompts = [long_caption(s) for s in specs]
    data = LongMotionClips(size=S, frames=T, fps=WHOLE_CLIP_FPS, split="all")
    gt = data.render_specs(specs, torch.Generator().manual_seed(run.seed), T, S)
    run.log(f"[eval] whole clip: {len(specs)} held-out clips of {T} frames, 4 ways")
    kw = dict(cfg=run.cfg)
    methods = {
        "stunet80": lambda p, i, steps: generate(m["stunet80"], p, num_frames=T, steps=steps, seed=run.seed + i, **kw),
        "cascade": lambda p, i, steps: generate_cascade(m["keyframes"], m["tsr"], p, T, stride=CASCADE_STRIDE,
                                                        steps=steps, seed=run.seed + i, **kw),
        "multidiffusion": lambda p, i, steps: torch.cat([generate_long(m["windows"], q, T, steps=steps,
                                                                     seed=run.seed + i + j, **kw)
                                                       for j, q in enumerate(p)]),  # one prompt (schedule) a call
        "extension": lambda p, i, steps: torch.cat([generate_extended(m["windows"], q, T, steps=steps,
                                                                      seed=run.seed + i + j, **kw)
                                                    for j, q in enumerate(p)]),
    }
    res = {"frames": T, "fps": WHOLE_CLIP_FPS, "cascade_stride": CASCADE_STRIDE,
           "window": m["windows"].config.num_frames, "windows_model": windows_file, "steps": run.steps,
           "ground_truth": whole_clip_figures(gt, specs, gt)}
    videos = {}
    for name, make in methods.items():
        t0 = time.time()
        v = torch.cat(run_batches(lambda p, i: make(p, i, run.steps).cpu(), prompts, run.batch))
        seconds = (time.time() - t0) / len(prompts)
        flops = count_flops(lambda: make(prompts[:1], 0, 1)) * run.steps
        videos[name] = v
        res[name] = {**whole_clip_figures(v, specs, gt), "seconds_per_clip": round(seconds, 2),
                     "gflops_per_clip": round(flops / 1e9, 1)}
    run.videos["whole_clip"] = videos
    errs = {k: res[k].get("period_error", float("nan")) for k in methods}
    res["stunet80_period_error_lowest"] = bool(all(errs["stunet80"] < e for k, e in errs.items() if k != "stunet80"))
    # each model's last training run (steps x batch x the stage's FLOPs per clip: the training compute)
    res["training"] = {k: {key: run_[key] for key in ("steps", "batch_size", "train_minutes", "config") if key in run_}
                       for k, b in m.items() for run_ in list(b.config.notes.get("training", {}).values())[-1:]}
    return res


SECTIONS = ("text_to_video", "conditioning", "ssr", "stylization", "frames", "camera", "photo", "whole_clip",
            "init_ablation", "distill")


def evaluate(models: str | Path = DEFAULT_MODELS, quick: bool = False, seed: int = 0, threads: int | None = None,
             log=print, per_combo: int = 2, bf16: bool = True, sections=SECTIONS, device: str = "cpu",
             photos: str | Path | None = DEFAULT_PHOTOS, real: str | Path | None = DEFAULT_REAL,
             whole_clip_clips: tuple[int, int] | None = None, student: str | Path | None = None,
             ssr_student: str | Path | None = None) -> dict:
    """The figures of `sections` (default all), as a dict. Sampling runs under bf16 autocast by default (about 2x
    faster on CPU) on `device` (the models are moved there; measurements are made on CPU copies)."""
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        raise ValueError(f"sections: expected some of {SECTIONS}, got {unknown}")
    set_threads(threads)
    device = resolve_device(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        res = _evaluate(models, quick, seed, log, per_combo, set(sections), device, photos, real, whole_clip_clips,
                        (student, ssr_student))
    res["settings"]["device"] = str(device)
    res["settings"]["bf16_autocast"] = bf16
    return res


def _evaluate(models, quick: bool, seed: int, log, per_combo: int, sections: set, device: torch.device,
              photos, real=None, whole_clip_clips=None, students=(None, None)) -> dict:
    models = Path(models)
    t_start = time.time()
    base = load_model(models / BASE, device)
    T, S = base.config.num_frames, base.config.resolution
    specs = eval_specs(1 if quick else per_combo)
    if quick:
        specs = specs[:2]
    prompts = [caption(**s) for s in specs]
    rec = base.config.sampling  # a distilled base is sampled as its checkpoint records (steps, cfg)
    run = EvalRun(models, quick, seed, log, base, specs, prompts, ground_truth(specs, T, S, seed),
                  steps=rec.get("steps", 4 if quick else 20), cfg=rec.get("cfg", 4.0), device=device,
                  photos=Path(photos) if photos else None,
                  real=Path(real) if real else None,
                  whole_clip_clips=tuple(whole_clip_clips) if whole_clip_clips else None)
    res: dict = {"models": str(models), "quick": quick, "seed": seed, "targets": targets_table()}
    res["settings"] = {"clips": len(specs), "frames": T, "size": S, "sampler": "ddim", "steps": run.steps,
                       "cfg": run.cfg, "held_out_combos": [list(c) for c in heldout_combos()],
                       "jump_max_speed_px": round(run.max_speed, 3), "jump_speed_factor": JUMP_SPEED_FACTOR}
    if "text_to_video" in sections:
        res["text_to_video"] = text_to_video_section(run)
        res["samples"] = [{"prompt": p, "stunet": {k: a[k] for k in ("colour", "shape", "direction")}}
                          for p, a in zip(prompts, run.videos["stunet_analysis"])]
    if "conditioning" in sections:
        res["conditioning"] = conditioning_section(run)
    if "ssr" in sections:
        if (models / SSR).exists():
            res["ssr"], res["multidiffusion"] = ssr_section(run)
        else:
            res["ssr"] = {"missing": str(models / SSR)}
    if "stylization" in sections:
        res["stylization"] = (stylization_section(run) if (models / STYLE).exists()
                              else {"missing": str(models / STYLE)})
    if "frames" in sections:
        res["frames"] = frames_section(run)
    if "camera" in sections:
        res["camera"] = camera_section(run)
    if "photo" in sections:
        res["photo"] = photo_section(run)
    if "whole_clip" in sections:
        res["whole_clip"] = whole_clip_section(run)
    if "distill" in sections:
        res["distill"] = distill_section(run, models / SSR, *students)
    if "init_ablation" in sections:
        log("[eval] init ablation")
        res["init_ablation"] = init_ablation(base, steps=2 if quick else 20, batch=1 if quick else 2, seed=seed)
    res["summary"], res["met"] = summarize(res)
    res["seconds"] = round(time.time() - t_start, 1)
    return res


def init_ablation(base: LumiereBundle, steps: int, batch: int, seed: int = 0) -> dict:
    """Temporal-stage loss after `steps` steps from the base's T2I weights: identity-initialized temporal
    resampling (the paper) vs He-initialized; the same data, noise levels and noise for both."""
    out = {"steps": steps, "batch_size": batch}
    for mode in ("identity", "he"):
        unet = UNet2D(copy.deepcopy(base.model.unet.cfg))
        unet.load_state_dict(base.model.unet.state_dict())
        cfg = copy.deepcopy(base.config)
        cfg.temporal, cfg.role = None, "t2i"
        init = LumiereBundle(unet, copy.deepcopy(base.text_encoder), cfg)
        spec = {"stage": "temporal", "preset": cfg.preset, "init_mode": mode,
                "batch_size": batch, "lr": 8e-4, "warmup": 5, "t_power": 0.5, "seed": seed, "bf16": True,
                "tasks": {"text": 1.0}}
        state = TrainState(spec, init_bundle=init)  # the in-memory start, beside the spec
        losses = [state.train_step() for _ in range(steps)]
        k = max(1, steps // 3)
        out[mode] = {"first_loss": round(losses[0], 5), "mean_loss_last_third": round(sum(losses[-k:]) / k, 5)}
    return out


def add_eval_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--models", default=str(DEFAULT_MODELS), help="folder with the demo checkpoints")
    parser.add_argument("--quick", action="store_true", help="a few clips and steps (tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp32", action="store_true", help="sample in fp32 (default: bf16 autocast)")
    parser.add_argument("--per-combo", type=int, default=2, help="clips per held-out combo (12 combos)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="what to measure (default: all)")
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS),
                        help="the camera section's held-out photos (scripts/fetch_photos.py; missing: textures)")
    parser.add_argument("--real", default=str(DEFAULT_REAL),
                        help="the photo section's real media (scripts/fetch_media.py; its held-out split is used)")
    parser.add_argument("--whole-clip-clips", type=int, nargs=2, metavar=("PERIODIC", "EVENTS"), default=None,
                        help="whole_clip: that many held-out periodic and event prompts, spread evenly over motions, "
                             "tempos, events and directions (default: all 24 + 16)")
    parser.add_argument("--student", default=None,
                        help="distill: the distilled base (default: MODELS/lumiere_demo_base_4step.safetensors)")
    parser.add_argument("--ssr-student", default=None,
                        help="distill: the distilled SSR (default: MODELS/lumiere_demo_ssr_2step.safetensors)")
    add_threads_arg(parser)
    add_device_arg(parser)
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    return parser


def eval_command(args: argparse.Namespace) -> int:
    res = evaluate(args.models, quick=args.quick, seed=args.seed, threads=args.threads, per_combo=args.per_combo,
                   bf16=not args.fp32, sections=args.sections, device=args.device, photos=args.photos,
                   real=args.real, whole_clip_clips=args.whole_clip_clips, student=args.student,
                   ssr_student=args.ssr_student, log=(lambda m: print(m, file=sys.stderr, flush=True)))
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        print(text)
    else:
        for k, v in res["summary"].items():
            print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m lumiere.eval")
    add_eval_args(p)
    keep_freed_memory()  # this process is ours (lumiere.compute)
    sys.exit(eval_command(p.parse_args()))
