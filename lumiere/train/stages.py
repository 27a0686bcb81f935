"""The five training stages: how each builds its model from the previous stage and what one batch's loss is.

A stage object has `bundle` (LumiereBundle: the network, its text encoder, its config), `trainable` (the
parameters the optimizer updates) and `loss(generator) -> scalar`, drawing everything (data, caption dropout,
noise levels, noise, task masks) from the one `generator`, so a step is a pure function of the saved state.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from functools import cached_property
from pathlib import Path

import torch

from .. import conditioning as cond_lib
from ..checkpoint import LumiereBundle, build_bundle, load_model
from ..configs import ModelConfig, get_preset
from ..data.camera import CAMERA_VOCAB, CameraClips, MixedClips
from ..data.embeddings import EMBEDDINGS_FILE, CaptionEmbeddings
from ..data.folder import FolderDataset
from ..data.longmotion import LONG_VOCAB, LongMotionClips
from ..data.procedural import VOCAB, ProceduralClips
from ..data.real import REAL_VOCAB, RealClips
from ..compute import to_compute_layout
from ..diffusion.denoiser import Denoiser
from ..diffusion.samplers import get_sigmas, sample
from ..diffusion.schedule import alpha_sigma, sample_t, v_loss, vesigma_to_t
from ..models.stunet import STUNet, freeze_t2i, inflate
from ..models.text import extend_vocab, split_words
from ..models.unet2d import widen_input
from ..metrics import bicubic_video
from ..pipeline import downsample_video, ssr_conditioning
from ..data.style import style_transform
from .spec import DataSpec, TrainSpec

STAGES = ("t2i", "temporal", "conditioning", "ssr", "style", "distill")
TASKS = cond_lib.TRAINING_TASKS  # the tasks a training mixture may name (lumiere.conditioning's table)


def apply_overrides(cfg: ModelConfig, overrides: dict) -> ModelConfig:
    """Deep-merge a dict into a config (e.g. {"unet": {"base_channels": 16}, "num_frames": 8})."""
    d = cfg.to_dict()

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v
    merge(d, overrides)
    return ModelConfig.from_dict(d)


def make_dataset(data: DataSpec, frames: int, size: int, fps: float = 8):
    """The spec's clips; with `data.long_motion` > 0 a mixture with motion that needs the whole clip
    (`lumiere.data.longmotion`), with `data.camera` > 0 a mixture with camera-motion clips over still images."""
    base = _base_dataset(data, frames, size, fps)
    if data.long_motion:
        if not 0.0 < data.long_motion <= 1.0:
            raise ValueError(f"data.long_motion: expected a fraction in 0..1, got {data.long_motion}")
        long = LongMotionClips(size=size, frames=frames, fps=fps, split=data.split, seconds=data.long_seconds)
        f = data.long_motion
        base = long if f == 1.0 else MixedClips([(base, 1.0 - f), (long, f)])
    if not data.camera:
        return base
    if not 0.0 < data.camera <= 1.0:
        raise ValueError(f"data.camera: expected a fraction in 0..1, got {data.camera}")
    camera = CameraClips(size=size, frames=frames, photos=data.photos or None, textures=data.textures)
    return camera if data.camera == 1.0 else MixedClips([(base, 1.0 - data.camera), (camera, data.camera)])


def _base_dataset(data: DataSpec, frames: int, size: int, fps: float):
    if data.kind == "procedural":
        return ProceduralClips(size=size, frames=frames, split=data.split, speed=data.speed, radius=data.radius,
                               bounce=data.bounce)
    if data.kind == "folder":
        if not data.path:
            raise ValueError("data.path: expected the folder of videos for data.kind 'folder'")
        # under torchrun each rank reads its own shard of the files (RANK / WORLD_SIZE, as the trainer)
        return FolderDataset(data.path, frames=frames, size=size, fps=data.fps or fps, workers=data.workers,
                             rank=int(os.environ.get("RANK", "0")), world=int(os.environ.get("WORLD_SIZE", "1")))
    if data.kind == "real":
        return RealClips(data.path or "data/real", size=size, frames=frames, fps=data.fps or fps, split=data.split,
                         crop=data.crop, stills=data.stills)
    raise ValueError(f"data.kind: expected 'procedural', 'folder' or 'real', got {data.kind!r}")


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    keep = torch.rand(len(captions), generator=generator) >= p
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


class Stage:
    name = ""
    device = torch.device("cpu")  # set by the Trainer; data are drawn on the CPU (seeded) and moved

    def __init__(self, spec: TrainSpec):
        self.spec = spec
        self.bundle: LumiereBundle
        self.trainable: list[torch.nn.Parameter]

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    def context(self, captions, generator):
        """Captions (some dropped to "") -> the text context: the built-in encoder's, or for an external-text
        model the stored embeddings of its encoder (`data.embeddings`; "" is the encoder's empty prompt)."""
        caps = drop_captions(captions, self.spec.caption_dropout, generator)
        if self.bundle.text_encoder is None:
            return self.embeddings(caps)
        return self.bundle.text_encoder.encode(caps)

    @cached_property
    def embeddings(self) -> CaptionEmbeddings:
        data = self.spec.data
        if data.kind != "folder":
            raise ValueError(f"data.kind: an external-text model trains on folder data with caption embeddings, "
                             f"got {data.kind!r}")
        table = CaptionEmbeddings(data.embeddings or Path(data.path) / EMBEDDINGS_FILE)
        width = self.bundle.config.unet.context_dim
        if table.width != width:
            raise ValueError(f"data.embeddings: expected embeddings {width} wide (the model's text width, "
                             f"model.unet.context_dim), got {table.width} ({table.encoder})")
        return table

    def noise_levels(self, n, generator):
        c = self.bundle.config
        return sample_t(n, c.sigma_min, c.sigma_max, generator, power=self.spec.t_power)

    def counts(self) -> dict:
        mods = [self.bundle.model] + ([self.bundle.text_encoder] if self.bundle.text_encoder is not None else [])
        total = sum(p.numel() for m in mods for p in m.parameters())
        trainable = sum(p.numel() for p in self.trainable)
        return {"trainable": trainable, "frozen": total - trainable, "total": total}

    def to_dev(self, *xs):
        return tuple(None if x is None else x.to(self.device) for x in xs)

    def modules(self):
        return [self.bundle.model] + ([self.bundle.text_encoder] if self.bundle.text_encoder is not None else [])


def _base_config(spec: TrainSpec) -> ModelConfig:
    cfg = apply_overrides(get_preset(spec.model_preset), spec.model)
    if cfg.text.kind == "external":  # the conditioning is the encoder's embeddings: the U-Net takes their width
        cfg.unet.context_dim = cfg.text.width
    elif not cfg.text.vocab:
        cfg.text.vocab = {"procedural": tuple(VOCAB), "real": REAL_VOCAB}.get(spec.data.kind) or \
            folder_vocab(spec.data.path)
        if spec.data.camera:
            cfg.text.vocab += tuple(w for w in CAMERA_VOCAB if w not in cfg.text.vocab)
        if spec.data.long_motion:
            cfg.text.vocab += tuple(w for w in LONG_VOCAB if w not in cfg.text.vocab)
    return cfg


def folder_vocab(root) -> tuple[str, ...]:
    """Every word of the caption files under `root` (the built-in tokenizer's vocabulary)."""
    words = set()
    for txt in Path(root).rglob("*.txt"):
        words.update(split_words(txt.read_text()))
    return tuple(sorted(words))


def _load_init(spec: TrainSpec, init_bundle: LumiereBundle | None) -> LumiereBundle:
    if init_bundle is not None:  # in-process (eval's init ablation, bench)
        return init_bundle
    if not spec.init:
        raise ValueError(f"stage {spec.stage!r}: expected 'init' (the previous stage's exported checkpoint)")
    b = load_model(spec.init)
    for m in (b.model, b.text_encoder):
        if m is not None:
            m.train().requires_grad_(True)
    return b


class T2IStage(Stage):
    """Text-to-image U-Net + built-in text encoder from scratch, on single frames; 10% caption dropout."""
    name = "t2i"

    def __init__(self, spec, init_bundle=None):
        super().__init__(spec)
        cfg = _base_config(spec)
        cfg.temporal, cfg.role, cfg.conditioning = None, "t2i", "none"
        cfg.unet.in_channels = 3
        self.bundle = build_bundle(cfg)
        self.data = make_dataset(spec.data, cfg.num_frames, cfg.resolution, cfg.fps)
        self.trainable = [p for m in self.modules() for p in m.parameters()]

    def loss(self, generator):
        x0, caps, _ = self.data.images(self.batch_size, generator)
        ctx = self.context(caps, generator)
        t = self.noise_levels(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator)
        return v_loss(self.bundle.model, *self.to_dev(x0, t, noise), None, ctx)


def _inflate_from(spec: TrainSpec, init: LumiereBundle) -> tuple[STUNet, ModelConfig]:
    cfg = copy.deepcopy(init.config)
    preset = _base_config(spec)
    cfg.temporal = preset.temporal
    cfg.num_frames, cfg.fps, cfg.preset = preset.num_frames, preset.fps, preset.preset
    model = init.model if isinstance(init.model, STUNet) else inflate(init.model, cfg.temporal)
    if spec.init_mode not in ("identity", "he"):
        raise ValueError(f"init_mode: expected 'identity' or 'he', got {spec.init_mode!r}")
    if spec.init_mode == "he":  # the paper's init ablation: resampling convs He-initialized
        for name, m in model.named_modules():
            if name.startswith(("temporal_down", "temporal_up")) and isinstance(m, torch.nn.Conv1d):
                torch.nn.init.kaiming_normal_(m.weight)
                torch.nn.init.zeros_(m.bias)
    return model, cfg


class TemporalStage(Stage):
    """Inflate the T2I into a STUNet, freeze the T2I (and text encoder), train the temporal layers only.

    With `"tasks"` in the spec it also widens to 7 channels and trains on the <J, C, M> mixture (the
    conditioning stage, or temporal + conditioning merged in one run).
    """
    name = "temporal"

    def __init__(self, spec, init_bundle=None):
        super().__init__(spec)
        init = _load_init(spec, init_bundle)
        model, cfg = _inflate_from(spec, init)
        self.tasks, self.camera_tasks = spec.tasks, spec.camera_tasks  # camera_tasks empty: camera clips use tasks
        for key, mix in (("tasks", self.tasks), ("camera_tasks", self.camera_tasks)):
            unknown = [k for k in mix if k not in TASKS]
            if unknown:
                raise ValueError(f"{key}: unknown task {unknown[0]!r}; expected some of {TASKS}")
        if spec.camera_tasks and not spec.tasks:
            raise ValueError("camera_tasks: expected `tasks` too (the mixture of the other clips)")
        if spec.data.camera and init.text_encoder is not None:  # the camera captions' words, seeded
            extend_vocab(init.text_encoder, CAMERA_VOCAB, torch.Generator().manual_seed(spec.seed))
            cfg.text.vocab = init.text_encoder.cfg.vocab
        if spec.data.long_motion and init.text_encoder is not None:  # the long-motion captions' words, seeded
            extend_vocab(init.text_encoder, LONG_VOCAB, torch.Generator().manual_seed(spec.seed + 1))
            cfg.text.vocab = init.text_encoder.cfg.vocab
        if self.tasks:
            if model.unet.cfg.in_channels != 7:
                widen_input(model.unet, 7)
            cfg.unet.in_channels, cfg.conditioning = 7, "jcm"
        elif cfg.conditioning != "jcm":
            cfg.conditioning = "none"
        cfg.unet = model.unet.cfg
        cfg.role = "base"
        self.bundle = LumiereBundle(model, init.text_encoder, cfg)
        freeze_t2i(model, train_input_conv=bool(self.tasks) and spec.train_conv_in)
        if init.text_encoder is not None:
            init.text_encoder.requires_grad_(False)
        # optional, un-Lumiere-like fallback: also fine-tune some T2I weights (e.g. the finest decoder level),
        # at lr * lr_t2i_scale; the log's trainable/frozen counts say how many
        unfreeze = tuple(spec.unfreeze)
        self.extra = []
        if unfreeze:
            for name, p in model.named_parameters():
                if name.startswith(unfreeze) and not p.requires_grad:
                    p.requires_grad_(True)
                    self.extra.append(p)
        extra_ids = {id(p) for p in self.extra}
        self.trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in extra_ids] + self.extra
        self.lr_scales = [1.0] * (len(self.trainable) - len(self.extra)) + \
            [spec.lr_t2i_scale] * len(self.extra)
        self.data = make_dataset(spec.data, cfg.num_frames, cfg.resolution, cfg.fps)
        self.short_data = None
        if spec.short_clips:
            if not 0.0 < spec.short_clips < 1.0:
                raise ValueError(f"short_clips: expected a fraction between 0 and 1, got {spec.short_clips}")
            multiple = model.frame_multiple
            if spec.short_frames < 1 or spec.short_frames % multiple:
                raise ValueError(f"short_frames: expected a positive multiple of {multiple} (the model's frame "
                                 f"multiple), got {spec.short_frames}")
            self.short_data = make_dataset(dataclasses.replace(spec.data, long_motion=0.0), spec.short_frames,
                                           cfg.resolution, cfg.fps)

    def make_cond(self, x0: torch.Tensor, generator: torch.Generator, specs: list[dict] | None = None):
        """A <C, M> per clip from the task mixture (weights `tasks`; `camera_tasks` for camera clips)."""
        b, _, t, h, w = x0.shape

        def draw(mix: dict) -> list[str]:
            names = list(mix)
            probs = torch.tensor([float(mix[k]) for k in names])
            return [names[k] for k in torch.multinomial(probs, b, replacement=True, generator=generator).tolist()]
        tasks = draw(self.tasks)
        if self.camera_tasks:
            camera = draw(self.camera_tasks)
            tasks = [camera[i] if specs and "camera" in specs[i] else tasks[i] for i in range(b)]
        C, M = torch.zeros(b, 3, t, h, w), torch.zeros(b, 1, t, h, w)
        for i, task in enumerate(tasks):
            u = torch.rand(4, generator=generator)
            if task == "text":
                continue
            if task == "image_to_video":
                c, m = cond_lib.image_to_video(x0[i:i + 1, :, 0], t)
            elif task == "inpaint":  # a random box is generated, the rest is known
                bh, bw = int(h * (0.3 + 0.4 * u[0])), int(w * (0.3 + 0.4 * u[1]))
                y0, x_0 = int((h - bh) * u[2]), int((w - bw) * u[3])
                known = torch.ones(h, w)
                known[y0:y0 + bh, x_0:x_0 + bw] = 0
                c, m = cond_lib.inpaint(x0[i:i + 1], known)
            elif task == "outpaint":  # a border band is generated, the centre is known
                p = [int(v) for v in (u * (w // 4)).round().tolist()]
                p = [max(1, v) for v in p]
                inner = x0[i:i + 1, :, :, p[2]:h - p[3], p[0]:w - p[1]]
                c, m = cond_lib.outpaint(inner, (p[0], p[1], p[2], p[3]))
            elif task == "keyframes" and self.spec.keyframe_stride:  # every s-th frame from a random phase (TSR)
                s = self.spec.keyframe_stride
                idx = list(range(min(int(u[2] * s), t - 1), t, s))
                c, m = cond_lib.keyframes(x0[i:i + 1, :, idx], idx, t)
            elif task == "keyframes":  # first + last (interpolation), sometimes one more in between
                idx = [0, t - 1] + ([1 + int(u[0] * (t - 2))] if u[1] < 0.5 and t > 2 else [])
                idx = sorted(set(idx))
                c, m = cond_lib.keyframes(x0[i:i + 1, :, idx], idx, t)
            elif task == "extend":  # the first k frames known, k in 1 .. t/2
                k = 1 + int(u[0] * (t // 2))
                c, m = cond_lib.extend(x0[i:i + 1, :, :k], t)
            elif task == "cinemagraph":  # frame 0 + everything outside the box around the object's path
                region = cond_lib.motion_region(x0[i], margin=int(1 + 2 * u[0]))
                c, m = cond_lib.cinemagraph(x0[i:i + 1, :, 0], region, t)
            else:
                raise ValueError(f"tasks: unknown task {task!r}; expected one of {TASKS}")
            C[i], M[i] = c[0], m[0]
        return cond_lib.pack(C, M)

    def loss(self, generator):
        data = self.data
        if self.short_data is not None and float(torch.rand(1, generator=generator)) < self.spec.short_clips:
            data = self.short_data  # this step: short clips (drawn only with short_clips: the old stream otherwise)
        x0, caps, specs = data.clips(self.batch_size, generator)
        ctx = self.context(caps, generator)
        cond = self.make_cond(x0, generator, specs) if self.tasks else None
        t = self.noise_levels(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator)
        x0, t, noise, cond = self.to_dev(x0, t, noise, cond)
        return v_loss(self.bundle.model, x0, t, noise, cond, ctx)


class ConditioningStage(TemporalStage):
    name = "conditioning"


class SSRStage(Stage):
    """A STUNet on (noisy high-res, bilinearly up-sampled low-res) over short windows: from scratch, or
    continued from an SSR checkpoint given as `init`."""
    name = "ssr"

    def __init__(self, spec, init_bundle=None):
        super().__init__(spec)
        if spec.init or init_bundle is not None:
            self.bundle = _load_init(spec, init_bundle)
            if self.bundle.config.role != "ssr":
                raise ValueError(f"init: expected an SSR checkpoint (role 'ssr'), got role "
                                 f"{self.bundle.config.role!r}")
            cfg = self.bundle.config
        else:
            cfg = _base_config(spec)
            cfg.role, cfg.conditioning = "ssr", "lowres"
            cfg.unet.in_channels = 6
            self.bundle = build_bundle(cfg)
        self.data = make_dataset(spec.data, cfg.num_frames, cfg.resolution, cfg.fps)
        self.trainable = [p for m in self.modules() for p in m.parameters()]

    def lowres(self, hi: torch.Tensor) -> torch.Tensor:
        """(b, 3, t, H, W) -> the SSR's conditioning: area down-sampled by `scale`, bilinearly up-sampled back."""
        return ssr_conditioning(hi, self.bundle.config.scale)

    def loss(self, generator):
        x0, caps, _ = self.data.clips(self.batch_size, generator)
        ctx = self.context(caps, generator)
        t = self.noise_levels(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator)
        x0, t, noise = self.to_dev(x0, t, noise)
        return v_loss(self.bundle.model, x0, t, noise, self.lowres(x0), ctx)


class StyleStage(Stage):
    """Fine-tune the base's T2I weights (a UNet2D with the base's `net.unet.*` keys) on styled single frames."""
    name = "style"

    def __init__(self, spec, init_bundle=None):
        super().__init__(spec)
        init = _load_init(spec, init_bundle)
        unet = init.model.unet if isinstance(init.model, STUNet) else init.model
        cfg = copy.deepcopy(init.config)
        cfg.temporal, cfg.role = None, "style"
        # from a 3-channel T2I: widen (zero-initialised C, M channels) so the keys/shapes match the 7-channel base
        width = spec.in_channels or unet.cfg.in_channels
        if unet.cfg.in_channels < width:
            widen_input(unet, width)
        cfg.unet = unet.cfg
        cfg.conditioning = {3: "none", 7: "jcm"}.get(unet.cfg.in_channels, cfg.conditioning)
        self.bundle = LumiereBundle(unet, init.text_encoder, cfg)
        if init.text_encoder is not None:
            init.text_encoder.requires_grad_(False)
        self.trainable = list(unet.parameters())
        self.data = make_dataset(spec.data, cfg.num_frames, cfg.resolution, cfg.fps)

    def loss(self, generator):
        x0, caps, _ = self.data.images(self.batch_size, generator)
        x0 = style_transform(x0)
        ctx = self.context(caps, generator)
        t = self.noise_levels(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator)
        extra = self.bundle.model.cfg.in_channels - 3
        cond = torch.zeros(x0.shape[0], extra, *x0.shape[2:]) if extra else None
        x0, t, noise, cond = self.to_dev(x0, t, noise, cond)
        return v_loss(self.bundle.model, x0, t, noise, cond, ctx)


STAGE_CLASSES = {"t2i": T2IStage, "temporal": TemporalStage, "conditioning": ConditioningStage,
                 "ssr": SSRStage, "style": StyleStage}


def build_stage(spec: TrainSpec | dict, init_bundle: LumiereBundle | None = None) -> Stage:
    spec = TrainSpec.from_dict(spec)
    if spec.stage not in STAGE_CLASSES:
        raise ValueError(f"stage: expected one of {STAGES}, got {spec.stage!r}")
    return STAGE_CLASSES[spec.stage](spec, init_bundle)


class DistillStage(TemporalStage):
    """A few-step student from a teacher (the base or the SSR): guidance-folded multi-step distillation on a
    fixed grid, in one round.

    The student is the teacher's copy, sampled with DDIM (eta 0) at cfg 1 on the `distill_steps`-point trailing
    grid s_0 > ... > s_{N-1} > s_N = 0 (`samplers.trailing_sigmas`: every call denoises, none is spent at
    sigma_min). One training example: a clip x0 (and its <C, M> from the teacher's task mixture `tasks`, or the
    SSR's low-res input: teacher and student get the same cond channels), a grid step i, x = x0 + s_i * noise.
    The teacher, frozen, runs K/N DDIM steps from (x, s_i) to s_{i+1} with classifier-free guidance `teacher_cfg`
    (K = `teacher_steps`, the teacher's whole trajectory being its K-step DDIM at that cfg), landing at x'. The
    student's one DDIM step, x + (x - D)(s_{i+1} / s_i - 1), lands there iff its x0 estimate is
    D* = (x' - r x) / (1 - r), r = s_{i+1} / s_i (at the last step D* = x'). The loss is the v-space MSE against
    D* (the "SNR + 1" weighting of Salimans & Ho 2022).

    Why this and not progressive halving (Salimans & Ho 2022; Meng et al. 2023, 32 -> 16 -> 8 -> 4 over rounds):
    the target is the teacher's own K-step path, so nothing compounds over rounds, no intermediate teacher has to
    be held in the checkpoint, and the whole budget trains the student at the grid it is sampled on; the price is
    K/N teacher calls per example (x2 with guidance), which at the demo models' size is still a few minutes on a
    GPU. Guidance is folded in as Meng et al.'s first stage (one fixed w instead of a w-conditioned student).
    Known-pixel replacement is not applied inside the teacher's steps: the network's own use of <C, M> is what is
    distilled; sampling with `replace_known` wraps the student as it wraps the teacher.

    The model's checkpoint records the grid and cfg 1 in `config.sampling` (read by `pipeline.sampling_defaults`,
    the CLI and the nodes). `make_cond` (the task mixture) is the conditioning stage's, inherited.
    """
    name = "distill"

    def __init__(self, spec, init_bundle=None):
        Stage.__init__(self, spec)
        init = _load_init(spec, init_bundle)
        cfg = copy.deepcopy(init.config)
        if cfg.role not in ("base", "ssr"):
            raise ValueError(f"init: expected a base or SSR checkpoint (role 'base' or 'ssr'), got role {cfg.role!r}")
        n, k = spec.distill_steps, spec.teacher_steps
        if n < 1 or k < n or k % n:
            raise ValueError(f"teacher_steps: expected a multiple of distill_steps ({n}, at least 1), got {k}")
        self.tasks, self.camera_tasks = spec.tasks, spec.camera_tasks
        for key, mix in (("tasks", self.tasks), ("camera_tasks", self.camera_tasks)):
            unknown = [t for t in mix if t not in TASKS]
            if unknown:
                raise ValueError(f"{key}: unknown task {unknown[0]!r}; expected some of {TASKS}")
        if self.tasks and cfg.conditioning != "jcm":
            raise ValueError(f"tasks: the teacher ({cfg.role}, conditioning {cfg.conditioning!r}) takes no <C, M>")
        self.teacher = copy.deepcopy(init.model).eval().requires_grad_(False)  # frozen; never in the checkpoint
        if init.text_encoder is not None:  # shared by teacher and student, frozen
            init.text_encoder.requires_grad_(False)
        # the teacher's K-step grid; the student's N-step grid is every (K/N)-th point of it
        self.teacher_sigmas = get_sigmas("trailing", k, cfg.sigma_min, cfg.sigma_max)  # (K + 1,), last 0
        self.every = k // n
        student_sigmas = get_sigmas("trailing", n, cfg.sigma_min, cfg.sigma_max)
        cfg.sampling = {"steps": n, "cfg": 1.0, "sampler": "ddim", "scheduler": "trailing",
                        "sigmas": [float(s) for s in student_sigmas],
                        "distilled": {"teacher_steps": k, "teacher_cfg": spec.teacher_cfg, "teacher": spec.init,
                                      "method": "guidance-folded multi-step distillation on a fixed DDIM grid"
                                      if spec.data_target < 1 else "the fixed DDIM grid trained on the data alone",
                                      "data_target": spec.data_target}}
        if cfg.role == "ssr":
            cfg.sampling["denoise"] = 1.0  # the grid from pure noise
        if not 0.0 <= spec.data_target <= 1.0:
            raise ValueError(f"data_target: expected a fraction in 0..1, got {spec.data_target}")
        if spec.student_init:
            load_student(init.model, spec.student_init, cfg.role, n)
        self.bundle = LumiereBundle(init.model, init.text_encoder, cfg)
        self.trainable = list(init.model.parameters())
        self.data = make_dataset(spec.data, cfg.num_frames, cfg.resolution, cfg.fps)
        self._device = torch.device("cpu")
        self._reference = None  # the probe's teacher samples (computed once, on the device)

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, device) -> None:
        """The Trainer places the stage's modules; the teacher (not one of them: never saved) follows here."""
        self._device = torch.device(device)
        self.teacher.to(self._device)
        if self.spec.channels_last:
            to_compute_layout(self.teacher)
        self._reference = None

    def cond_for(self, x0: torch.Tensor, generator: torch.Generator, specs) -> torch.Tensor | None:
        """The cond channels teacher and student both get, on the CPU (seeded; moved with the batch): <C, M> from
        the task mixture (zeros without `tasks`: text-to-video), the SSR's up-sampled low-res clip, or None (a
        3-channel base).  x0 (b, 3, t, h, w) on the CPU -> (b, 4 or 3, t, h, w)."""
        c = self.bundle.config
        if c.conditioning == "lowres":
            return ssr_conditioning(x0, c.scale)
        if c.conditioning != "jcm":
            return None
        if self.tasks:
            return self.make_cond(x0, generator, specs)
        b, _, t, h, w = x0.shape
        return torch.zeros(b, 4, t, h, w)

    @torch.no_grad()
    def teacher_target(self, x: torch.Tensor, i: torch.Tensor, ctx, uctx, cond) -> torch.Tensor:
        """The teacher's K/N guided DDIM steps from x at s_i to s_{i+1} (i (b,) per clip) -> x' (b, 3, t, h, w)."""
        den = Denoiser(self.teacher, ctx, uctx, cond, self.spec.teacher_cfg)
        grid = self.teacher_sigmas.to(x.device)
        shape = (-1,) + (1,) * (x.ndim - 1)
        for j in range(self.every):
            s, s_next = grid[i * self.every + j], grid[i * self.every + j + 1]
            d = den(x, s)
            x = d + (x - d) * (s_next / s).view(shape)  # DDIM, eta 0 (s_next = 0: x = d)
        return x

    def loss(self, generator):
        x0, caps, specs = self.data.clips(self.batch_size, generator)
        ctx = self.context(caps, generator)
        b = x0.shape[0]
        n = self.spec.distill_steps
        i = torch.randint(n, (b,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        cond = self.cond_for(x0, generator, specs)
        x0, noise, i, cond = self.to_dev(x0, noise, i, cond)
        uctx = self.uncond(b)
        grid = self.teacher_sigmas.to(self.device)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        s, s_next = grid[i * self.every], grid[(i + 1) * self.every]
        x = x0 + s.view(shape) * noise
        p = self.spec.data_target
        if p < 1.0:
            target = self.teacher_target(x, i, ctx.to(self.device), uctx.to(self.device), cond)
            r = (s_next / s).view(shape)
            x0_star = (target - r * x) / (1 - r)  # the student's DDIM step lands on the target iff D = x0_star
        if p > 0.0:  # these examples' target is the clip itself (drawn only then: p = 0 keeps the old stream)
            on_data = (torch.rand(b, generator=generator) < p).to(self.device).view(shape)
            x0_star = x0 if p >= 1.0 else torch.where(on_data, x0, x0_star)
        t = vesigma_to_t(s)
        alpha, sigma = (v.view(shape) for v in alpha_sigma(t))
        x_t = alpha * x
        inp = x_t if cond is None else torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        v_star = (alpha * x_t - x0_star) / sigma  # x0 = alpha x_t - sigma v
        return ((self.bundle.model(inp, t, ctx.to(self.device)).float() - v_star) ** 2).mean()

    def uncond(self, b: int) -> torch.Tensor:
        """The unconditional text context of the teacher's guidance (the empty prompt), (b, m, d)."""
        if self.bundle.text_encoder is None:
            return self.embeddings([""] * b)
        with torch.no_grad():
            return self.bundle.text_encoder.encode([""] * b)

    @torch.no_grad()
    def distill_probe(self, clips: int = 8, seed: int = 0) -> dict:
        """The student at its grid (cfg 1) against the teacher's K-step guided DDIM from the same noise, on a
        fixed seeded set of `clips` training clips with their conds (teacher samples computed once): PSNR (dB) to
        the teacher and to the clips themselves (for the SSR: the true high-res clips; bicubic up-sampling of the
        low-res input is its baseline, `bicubic_psnr_to_data`)."""
        if self._reference is None:
            g = torch.Generator().manual_seed(10_000 + seed)
            x0, caps, specs = self.data.clips(clips, g)
            x0, cond = self.to_dev(x0, self.cond_for(x0, g, specs))
            ctx = (self.bundle.text_encoder.encode(caps) if self.bundle.text_encoder is not None
                   else self.embeddings(caps)).to(self.device)
            uctx = self.uncond(clips).to(self.device)
            teacher = sample(Denoiser(self.teacher, ctx, uctx, cond, self.spec.teacher_cfg), x0.shape,
                             self.teacher_sigmas, "ddim", seed, device=self.device).clamp(-1, 1)
            extra = {}
            c = self.bundle.config
            if c.conditioning == "lowres":
                extra["bicubic_psnr_to_data"] = round(_psnr(bicubic_video(downsample_video(x0, c.scale), c.scale),
                                                            x0), 2)
            self._reference = (x0, cond, ctx, teacher, extra)
        x0, cond, ctx, teacher, extra = self._reference
        rec = self.bundle.config.sampling
        sigmas = torch.tensor(rec["sigmas"], dtype=torch.float32)
        was_training = self.bundle.model.training
        self.bundle.model.eval()
        try:
            student = sample(Denoiser(self.bundle.model, ctx, None, cond, 1.0), x0.shape, sigmas, rec["sampler"],
                             seed, device=self.device).clamp(-1, 1)
        finally:
            self.bundle.model.train(was_training)
        return {"student_psnr_to_teacher": round(_psnr(student, teacher), 2),
                "student_psnr_to_data": round(_psnr(student, x0), 2),
                "teacher_psnr_to_data": round(_psnr(teacher, x0), 2), **extra, "student_steps": rec["steps"]}


def load_student(model: torch.nn.Module, path: str, role: str, steps: int) -> None:
    """Continue a distillation: the student weights of `path` into `model` (the teacher's copy), checked to be a
    student of the same kind (role, `distill_steps`)."""
    student = load_model(path)
    rec = student.config.sampling or {}
    if student.config.role != role or "distilled" not in rec or rec.get("steps") != steps:
        raise ValueError(f"student_init: expected a {role} distilled to {steps} steps, got {path} (role "
                         f"{student.config.role!r}, sampling {rec.get('steps', 'not distilled')} steps)")
    model.load_state_dict(student.model.state_dict())


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two videos in -1..1 (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean().clamp(min=1e-12)
    return float(10 * torch.log10(4 / mse))


STAGE_CLASSES["distill"] = DistillStage
