"""The held-out probes the trainer logs while a model trains (`probe_minutes`): sampled clips of the EMA
weights measured with `lumiere.metrics`. The eval's sections measure the same things at full size."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import conditioning as cond_lib
from ..checkpoint import LumiereBundle
from ..data.camera import CAMERA_CLIPS_PER_PHOTO, camera_clips
from ..data.procedural import caption, eval_specs, heldout_combos
from ..metrics import adherence, analyse, camera_figures, data_max_speed, flicker, jumps
from ..pipeline import generate, run_batches


def probe_videos(bundle: LumiereBundle, prompts: list[str], steps: int, cfg: float, seed: int, batch: int,
                 **per_clip: torch.Tensor) -> torch.Tensor:
    """The training probes' samples: `prompts` in batches (clip i seeded seed + i, per-clip tensors such as C
    and M sliced with their batch), in eval mode, the model's mode restored after."""
    was_training = bundle.model.training
    bundle.model.eval()
    try:
        return torch.cat(run_batches(
            lambda p, i: generate(bundle, p, steps=steps, cfg=cfg, seed=seed + i,
                                  **{k: v[i:i + len(p)] for k, v in per_clip.items()}).cpu(), prompts, batch))
    finally:
        bundle.model.train(was_training)


def motion_probe(bundle: LumiereBundle, clips: int = 24, steps: int = 20, cfg: float = 4.0, seed: int = 0,
                 batch: int = 4) -> dict:
    """The training-time probe of motion: held-out text-to-video clips -> direction, colour, shape accuracy and
    the fraction of clips with a jump. `clips` is rounded up to whole passes over the 12 held-out combos."""
    c = bundle.config
    per_combo = max(1, math.ceil(clips / len(heldout_combos())))
    specs = eval_specs(per_combo)
    prompts = [caption(**s) for s in specs]
    vids = probe_videos(bundle, prompts, steps, cfg, seed, batch)
    a = [analyse(x) for x in vids]
    speed = data_max_speed(c.resolution, c.num_frames)
    jmp = [jumps(x, speed) for x in vids]
    row = adherence(a, specs)
    return {"clips": len(specs), "direction_acc": row["direction_acc"], "colour_acc": row["colour_acc"],
            "shape_acc": row["shape_acc"], "jump_rate": round(sum(j["jump"] for j in jmp) / len(jmp), 4),
            "static_or_empty": row["static_or_empty"], "mean_travel_px": row["mean_travel_px"],
            "flicker": round(flicker(vids), 4)}


def camera_probe(bundle: LumiereBundle, photos: str | Path | None = None, steps: int = 20, cfg: float = 4.0,
                 seed: int = 0, batch: int = 4, per_source: int = CAMERA_CLIPS_PER_PHOTO, sources: int = 0) -> dict:
    """Image-to-video on held-out camera clips (the model's own output, no replacement): the training probe of
    the camera motions (`sources` > 0: over that many of the photos)."""
    c = bundle.config
    gt, prompts, specs = camera_clips(photos, c.resolution, c.num_frames, seed, per_source, sources)
    C, M = cond_lib.image_to_video(gt[:, :, 0], c.num_frames)
    vids = probe_videos(bundle, prompts, steps, cfg, seed, batch, C=C, M=M)
    figs = camera_figures(vids, gt, specs)
    return {f"camera_{k}": v for k, v in figs.items() if k != "reads"} | {"camera_clips": len(specs)}
