"""The training config, typed: every key, its default and its meaning in one place.

A config file (JSON, `configs/*.json`) is read into a `TrainSpec`; an unknown key is an error that names it
(a typo never silently falls back to a default). The table of keys in `docs/training.md` is generated from
here (`python -m lumiere.train.spec` prints it; a test keeps the two equal).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _key(default, meaning: str, **kw):
    factory = kw.pop("factory", None)
    if factory is not None:
        return field(default_factory=factory, metadata={"meaning": meaning})
    return field(default=default, metadata={"meaning": meaning})


@dataclass
class DataSpec:
    kind: str = _key("procedural", "`procedural` (seeded captioned shapes), `folder` (videos + .txt captions) or "
                                   "`real` (random crops of the real clips and stills of `scripts/fetch_media.py`, "
                                   "\"a video\" / \"a photo\")")
    camera: float = _key(0.0, "the fraction of clips that are camera motion over still images (`lumiere.data.camera`: "
                              "pans and zooms, \"the camera pans left\"); their words join the text encoder's "
                              "vocabulary")
    long_motion: float = _key(0.0, "the fraction of clips of motion that needs the whole clip "
                                   "(`lumiere.data.longmotion`: swings / bobs / orbits / bounces at a fast / medium / slow tempo = a period of "
                                   "6 / 12 / 20 frames at 16 fps, and crossings / rebounds spanning the whole "
                                   "motion); their words join the text encoder's vocabulary")
    long_seconds: float = _key(5.0, "long_motion: the length of the whole motion in seconds; a shorter clip is a "
                                    "window of it at a random offset (the TSR's)")
    photos: str = _key("", "camera: a folder of images (`scripts/fetch_photos.py`; empty: procedural textures only)")
    textures: float = _key(0.5, "camera: the fraction of camera clips over procedural textures when `photos` is set")
    split: str = _key("train", "procedural: `train` (60 combos), `heldout` (the 12 evaluation combos) or `all`; "
                               "real: `train` or `heldout`")
    speed: tuple[float, float] = _key((1.4, 2.0), "procedural: (min, max) px/frame at 32 px")
    radius: tuple[float, float] = _key((4.0, 6.0), "procedural: (min, max) object half-size at 32 px")
    bounce: bool = _key(False, "procedural: keep the drawn speed and bounce off the far wall (`false`: cap the "
                               "speed so every clip is one straight path)")
    path: str = _key("", "folder: the folder of videos; real: the folder of `scripts/fetch_media.py` (empty: "
                         "`data/real`)")
    crop: tuple[float, float] = _key((0.4, 1.0), "real: (min, max) side of a random square crop, as a fraction of "
                                                 "the short side (log-uniform)")
    stills: float = _key(0.5, "real: the fraction of training images drawn from the stills (the rest: frames of "
                              "the clips)")
    embeddings: str = _key("", "folder, external-text models: the caption embeddings file of "
                               "`scripts/embed_captions.py` (empty: `caption_embeddings.safetensors` in `path`)")
    fps: float = _key(0.0, "folder: resample to this frame rate (0: the model's)")
    workers: int = _key(0, "folder: threads decoding the videos ahead of training into the in-memory cache (0: "
                           "decode on first use); the trainer logs the seconds it waited for data")


@dataclass
class TrainSpec:
    stage: str = _key("", "`t2i`, `temporal`, `conditioning`, `ssr`, `style` or `distill`")
    preset: str = _key("", "model preset: `tiny`, `demo`, `ssr_demo`, `paper` (empty: `ssr_demo` for ssr, else "
                           "`demo`)")
    model: dict = _key(None, "overrides merged into the preset, e.g. `{\"unet\": {\"base_channels\": 64}}`",
                       factory=dict)
    init: str = _key("", "the previous stage's exported checkpoint (temporal, conditioning, style; distill: the "
                         "teacher, a base or an SSR)")
    init_mode: str = _key("identity", "`identity` (the paper: identity-initialised temporal resampling) or `he` "
                                      "(the ablation)")
    data: DataSpec = _key(None, "the data (the `data.*` keys below)", factory=DataSpec)
    tasks: dict = _key(None, "conditioning mixture weights over `text`, `image_to_video`, `inpaint`, `outpaint`, "
                             "`cinemagraph`, `keyframes`, `extend` (empty: text-to-video, 3 input channels)",
                       factory=dict)
    camera_tasks: dict = _key(None, "the task mixture of the camera clips (`data.camera`; empty: `tasks`)",
                              factory=dict)
    keyframe_stride: int = _key(0, "the `keyframes` task: known frames every N-th frame from a random phase 0..N-1 "
                                   "(the temporal cascade's TSR; 0: first + last, sometimes one in between)")
    short_clips: float = _key(0.0, "temporal / conditioning: the fraction of steps whose batch is `short_frames`-frame "
                                   "clips of the data without long motion, at the data's own speed (a long-clip "
                                   "model that keeps making the short clips of the model it grew from)")
    short_frames: int = _key(16, "short_clips: frames of those clips (a multiple of the model's frame multiple)")
    train_conv_in: bool = _key(True, "with `tasks`: also train the (widened) input conv")
    unfreeze: list = _key(None, "T2I parameter-name prefixes also fine-tuned (a documented deviation from the "
                                "paper's frozen T2I), at `lr * lr_t2i_scale`", factory=list)
    lr_t2i_scale: float = _key(0.25, "learning-rate factor of the `unfreeze` parameters")
    in_channels: int = _key(0, "style: widen the T2I input to this many channels (0: keep)")
    distill_steps: int = _key(4, "distill: the student's sampling steps (network calls per clip, cfg 1), on the "
                                 "trailing grid recorded in its checkpoint")
    teacher_steps: int = _key(32, "distill: the teacher's DDIM steps over the same range, a multiple of "
                                  "`distill_steps` (each K/N of them are one student step's target)")
    teacher_cfg: float = _key(4.0, "distill: the teacher's classifier-free guidance scale, folded into the student")
    student_init: str = _key("", "distill: continue from this student (an export of the same kind of distillation: "
                                 "same teacher role and `distill_steps`); empty: the student starts as the teacher")
    data_target: float = _key(0.0, "distill: the fraction of examples whose target is the clip itself instead of the "
                                   "teacher's landing point (1: the grid is trained on data alone, no teacher calls; "
                                   "for the SSR, where the data's posterior mean is what PSNR rewards)")
    batch_size: int = _key(8, "clips (or images) per step and process")
    lr: float = _key(5e-4, "AdamW learning rate after warm-up")
    warmup: int = _key(100, "linear warm-up steps")
    decay: str = _key("", "`cosine` to decay to 0 at `max_steps` (empty: constant)")
    betas: tuple[float, float] = _key((0.9, 0.99), "AdamW betas")
    weight_decay: float = _key(0.0, "AdamW weight decay")
    grad_clip: float = _key(1.0, "gradient-norm clip (0: off)")
    ema: float = _key(0.995, "EMA decay of the exported weights")
    bf16: bool = _key(True, "bf16 autocast (fp32 master weights)")
    channels_last: bool = _key(True, "channels_last compute layout (`lumiere.compute`)")
    activation_checkpointing: bool = _key(False, "recompute each STUNet block's activations in the backward pass "
                                                 "(less memory, ~1.3x the step time; for long clips on a GPU)")
    caption_dropout: float = _key(0.1, "probability of the empty prompt (classifier-free guidance)")
    t_power: float = _key(1.0, "noise-level bias t = u^p (p < 1: more high noise, where motion is decided)")
    threads: int = _key(0, "torch CPU threads (0: half the cores)")
    seed: int = _key(0, "model init and data seed")
    device: str = _key("", "`cpu`, `cuda` (empty: cuda if available)")
    checkpoint_minutes: float = _key(5.0, "time between checkpoints")
    keep_checkpoints: int = _key(2, "checkpoints kept in the run folder")
    export_every_checkpoint: bool = _key(True, "also export the EMA model at every checkpoint")
    log_every: int = _key(20, "steps between loss-log records")
    tqdm_interval: float = _key(10.0, "seconds between progress-bar refreshes")
    probe_minutes: float = _key(0.0, "minutes between held-out motion probes logged to train.jsonl (0: off)")
    probe: dict = _key(None, "probe options: `clips`, `steps`, `cfg` (`lumiere.train.probes.motion_probe`), `motion` (false: "
                             "no shapes probe), `camera_photos` (a folder: the camera probe too), `camera_sources` "
                             "(over that many of its photos)", factory=dict)
    out: str = _key("", "run folder (empty: `runs/STAGE`)")
    export: str = _key("", "also write the final EMA model here")
    export_dtype: str = _key("fp32", "`fp32`, `bf16` or `fp16` exports (the EMA weights; training state stays fp32)")
    max_minutes: float = _key(0.0, "stop (checkpoint + export) after this long (0: no limit)")
    max_steps: int = _key(0, "stop after this many steps in total (0: no limit)")
    config_file: str = _key("", "set by the CLI: the file the spec came from")
    dump_rank_weights: bool = _key(False, "tests: every DDP rank writes the weights it holds")

    @property
    def model_preset(self) -> str:
        return self.preset or ("ssr_demo" if self.stage == "ssr" else "demo")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainSpec":
        """A spec from a config dict; unknown keys and wrongly typed values are errors that name them."""
        if isinstance(d, TrainSpec):
            return d
        d = dict(d)
        data = _build(DataSpec, d.pop("data", {}) or {}, "data.")
        return _build(TrainSpec, d, "", data=data)


def _build(cls, d: dict, prefix: str, **extra):
    if not isinstance(d, dict):
        raise ValueError(f"config {prefix.rstrip('.')}: expected an object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise ValueError(f"config: unknown key '{prefix}{unknown[0]}'; expected one of "
                         f"{sorted(prefix + k for k in fields)}")
    values = {}
    for k, v in d.items():
        default = fields[k].default if fields[k].default is not dataclasses.MISSING else fields[k].default_factory()
        values[k] = _coerce(f"{prefix}{k}", v, default)
    return cls(**values, **extra)


def _coerce(name: str, value, default):
    """JSON value -> the field's type (taken from its default); None means 'not set' for numbers."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config {name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config {name}: expected a number, got {value!r}")
        if isinstance(default, int) and not float(value).is_integer():
            raise ValueError(f"config {name}: expected a whole number, got {value!r}")
        return type(default)(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"config {name}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ValueError(f"config {name}: expected a list of {len(default)} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config {name}: expected a list, got {value!r}")
        return list(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ValueError(f"config {name}: expected an object, got {value!r}")
        return dict(value)
    return value


def load_spec(path: str | Path) -> TrainSpec:
    with open(path) as f:
        d = json.load(f)
    try:
        return TrainSpec.from_dict(d)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def markdown_table() -> str:
    """The config-key table of docs/training.md."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for cls, prefix in ((TrainSpec, ""), (DataSpec, "data.")):
        for f in dataclasses.fields(cls):
            if f.name == "data" and cls is TrainSpec:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append(f"| `{prefix}{f.name}` | `{json.dumps(default)}` | {f.metadata['meaning']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
