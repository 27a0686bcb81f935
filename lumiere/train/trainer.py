"""One training loop for every stage: AdamW + warm-up, EMA, grad clipping, bf16 autocast, tqdm + a jsonl loss
log, atomic time-based checkpoints with exact resume, and data parallelism over `torchrun` processes.

Checkpoint layout (in the run folder `out`):
  state-{step}.safetensors  weights (`model.*`), EMA (`ema.{i}`), AdamW moments (`opt.{i}.*`) and every rank's
                            generator state (`rng.{rank}`, uint8) -- tensors only, never a pickle
  state-{step}.json         step, train time, optimizer scalars, the spec it was trained with
  latest.json               the pointer to the newest complete pair, replaced atomically (written last)
  train.jsonl               the loss log
  model.safetensors         the exported EMA model (a normal Lumiere checkpoint, `load_model` reads it)
Resume = same spec + `--resume`: the run continues bitwise as if it had not stopped (same world size).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..checkpoint import atomic_save_tensors, atomic_write_bytes, save_model
from ..compute import set_threads, to_compute_layout
from .probes import camera_probe, motion_probe
from .spec import TrainSpec
from .stages import build_stage


class TrainState:
    """What training steps need, without a run folder: the stage (model, data, loss), the device, AdamW, the
    EMA, the step count and the data generator. `train_step()` advances it, `ema_weights()` swaps the EMA in.
    The bench and the eval's init ablation drive it directly; `Trainer` adds the run folder (checkpoints, exact
    resume, exports, the loss log, probes) and the loop."""

    def __init__(self, spec: TrainSpec | dict, init_bundle=None, max_steps: int | None = None):
        """`spec`: a TrainSpec or a config dict (validated). `init_bundle`: an in-memory LumiereBundle to start
        from instead of `spec.init` (never part of the spec, which is written to every checkpoint as JSON).
        `max_steps` (default: the spec's): the end of a cosine decay."""
        spec = self.spec = TrainSpec.from_dict(spec)
        self.max_steps = max_steps if max_steps is not None else (spec.max_steps or None)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        set_threads(spec.threads)
        seed = spec.seed
        torch.manual_seed(seed)  # model init: identical on every rank (and broadcast below)
        self.stage = build_stage(spec, init_bundle)
        dev = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dev == "cuda":
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(dev)
        self.device = torch.device(dev)
        self.stage.device = self.device
        for m in self.stage.modules():
            m.to(self.device)
        if spec.channels_last:
            to_compute_layout(self.stage.bundle.model)
        if spec.activation_checkpointing:
            if not hasattr(self.stage.bundle.model, "activation_checkpointing"):
                raise ValueError(f"activation_checkpointing: only STUNet stages have it, not stage {spec.stage!r}")
            self.stage.bundle.model.activation_checkpointing = True
        self.params = self.stage.trainable
        # the training summary's key in the model's notes: "stage", or "stage_runN" for a continuation
        earlier = [k for k in self.stage.bundle.config.notes.get("training", {})
                   if k == spec.stage or k.startswith(spec.stage + "_run")]
        self.hist_key = spec.stage + (f"_run{len(earlier) + 1}" if earlier else "")
        for m in self.stage.modules():
            m.train()
        if self.world > 1:
            with torch.no_grad():
                for m in self.stage.modules():
                    for t in m.state_dict().values():
                        dist.broadcast(t, 0)
        self.generator = torch.Generator().manual_seed(seed * 1000 + self.rank)
        scales = getattr(self.stage, "lr_scales", None) or [1.0] * len(self.params)
        groups = {}
        for p, sc in zip(self.params, scales):
            groups.setdefault(sc, []).append(p)
        self.params = [p for sc in groups for p in groups[sc]]  # group order (== the stage's order)
        self.opt = torch.optim.AdamW([{"params": ps, "lr_scale": sc} for sc, ps in groups.items()],
                                     lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
        self.ema = [p.detach().clone().float() for p in self.params]
        self.step = 0
        self.train_seconds = 0.0
        self.last_loss = float("nan")

    # ---- schedule -------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        lr, warm = self.spec.lr, self.spec.warmup
        f = min(1.0, (step + 1) / max(1, warm))
        if self.spec.decay == "cosine" and self.max_steps:
            f *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.max_steps)))
        return lr * f

    # ---- one step ---------------------------------------------------------------------------------------
    def train_step(self) -> float:
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_scale", 1.0)
        bf16 = self.spec.bf16
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            loss = self.stage.loss(self.generator)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world
            i = 0
            for p, g in zip(self.params, grads):
                n = g.numel()
                p.grad = flat[i:i + n].view_as(g).clone()
                i += n
            lt = loss.detach().clone()
            dist.all_reduce(lt)
            loss_value = float(lt) / self.world
        else:
            loss_value = float(loss.detach())
        if self.spec.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.grad_clip)
        self.opt.step()
        decay = min(self.spec.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():  # one multi-tensor op over all weights (a GPU step is launch-bound at this size)
            torch._foreach_mul_(self.ema, decay)
            torch._foreach_add_(self.ema, [p.detach().float() for p in self.params], alpha=1 - decay)
        self.step += 1
        return loss_value

    @contextmanager
    def ema_weights(self):
        """The EMA weights in the model for the duration (export, probes); the raw weights come back after."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, e in zip(self.params, self.ema):
                p.copy_(e.to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)


class Trainer(TrainState):
    def __init__(self, spec: TrainSpec | dict, out: str | Path | None = None, resume: bool = False,
                 max_minutes: float | None = None, max_steps: int | None = None, quiet: bool = False,
                 init_bundle=None):
        """A TrainState with its run folder `out` (default: the spec's `out`, else runs/STAGE), continued from its
        last checkpoint with `resume`; `max_minutes` / `max_steps` (default: the spec's) end `run()`."""
        super().__init__(spec, init_bundle, max_steps)
        spec = self.spec
        self.out = Path(out or spec.out or f"runs/{spec.stage}")
        self.max_minutes = max_minutes if max_minutes is not None else (spec.max_minutes or None)
        self.quiet = quiet
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load()

    # ---- checkpoints ------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {}
        for i, m in enumerate(self.stage.modules()):
            t.update({f"model{i}.{k}": v.detach().cpu().contiguous() for k, v in m.state_dict().items()})
        for i, e in enumerate(self.ema):
            t[f"ema.{i}"] = e.cpu().contiguous()
        for i, p in enumerate(self.params):
            st = self.opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v):
                    t[f"opt.{i}.{k}"] = v.detach().cpu().contiguous()
        rng = self.generator.get_state()
        if self.world > 1:
            r = rng.to(self.device)
            allr = [torch.empty_like(r) for _ in range(self.world)]
            dist.all_gather(allr, r)
            allr = [x.cpu() for x in allr]
        else:
            allr = [rng]
        for r, s in enumerate(allr):
            t[f"rng.{r}"] = s
        return t

    def save(self) -> None:
        t = self.state_tensors()  # collective in DDP: every rank calls it
        if self.rank != 0:
            return
        name = f"state-{self.step:08d}"
        atomic_save_tensors(self.out / f"{name}.safetensors", t)
        meta = {"step": self.step, "train_seconds": self.train_seconds, "world_size": self.world,
                "last_loss": self.last_loss, "spec": self.spec.to_dict(),
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.opt.param_groups]}
        atomic_write_bytes(self.out / f"{name}.json", json.dumps(meta, indent=1).encode())
        atomic_write_bytes(self.out / "latest.json", json.dumps({"name": name, "step": self.step}).encode())
        keep = self.spec.keep_checkpoints
        olds = sorted(self.out.glob("state-*.safetensors"))[:-keep]
        for f in olds:
            for g in (f, f.with_suffix(".json")):
                if g.exists():
                    g.unlink()

    def load(self) -> bool:
        ptr = self.out / "latest.json"
        if not ptr.exists():
            return False
        name = json.loads(ptr.read_text())["name"]
        t = load_file(str(self.out / f"{name}.safetensors"))
        meta = json.loads((self.out / f"{name}.json").read_text())
        for i, m in enumerate(self.stage.modules()):
            pre = f"model{i}."
            m.load_state_dict({k[len(pre):]: v.to(self.device) for k, v in t.items() if k.startswith(pre)})
        for i, e in enumerate(self.ema):
            e.copy_(t[f"ema.{i}"].to(e.device))
        for i, p in enumerate(self.params):
            keys = [k for k in t if k.startswith(f"opt.{i}.")]
            if keys:
                self.opt.state[p] = {k[len(f"opt.{i}."):]: (t[k].clone() if k.endswith(".step") else t[k].to(p.device))
                                     for k in keys}
        for g, saved in zip(self.opt.param_groups, meta["param_groups"]):
            g.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items()})
        key = f"rng.{self.rank}"
        if key in t and meta.get("world_size", 1) == self.world:
            self.generator.set_state(t[key])
        else:
            self.generator.manual_seed(self.spec.seed * 1000 + self.rank + 7919 * meta["step"])
        self.step, self.train_seconds = meta["step"], meta["train_seconds"]
        self.last_loss = meta.get("last_loss", float("nan"))
        return True

    def export(self, path: str | Path | None = None) -> Path | None:
        """Write the EMA weights as a normal Lumiere checkpoint (fp32, or `export_dtype`)."""
        if self.rank != 0:
            return None
        path = Path(path or self.out / "model.safetensors")
        cfg = self.stage.bundle.config
        notes = dict(cfg.notes)
        hist = dict(notes.get("training", {}))
        hist[self.hist_key] = {"steps": self.step, "train_minutes": round(self.train_seconds / 60, 2),
                                    "last_loss": round(self.last_loss, 5), "world_size": self.world,
                                    "batch_size": self.stage.batch_size, "lr": self.spec.lr,
                                    **self.stage.counts(),
                                    "config": self.spec.config_file,
                                    "init": self.spec.init,
                                    "unfreeze": list(self.spec.unfreeze)}
        notes["training"] = hist
        notes["data"] = dataclasses.asdict(self.spec.data)
        cfg.notes = notes
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.spec.export_dtype)
        with self.ema_weights():
            save_model(path, self.stage.bundle, dtype=dtype)
        return path

    def probe(self) -> dict:
        """The held-out motion probe (`lumiere.train.probes.motion_probe`) on the EMA weights, logged to train.jsonl.

        Spec `probe`: {"clips": 24, "steps": 20, "cfg": 4}; with `"camera_photos": DIR` (a folder of held-out
        images, or "" for seeded textures) also the camera probe (`lumiere.train.probes.camera_probe`, image-to-video;
        `"camera_sources": N` over N of the photos); `"motion": false` leaves out the shapes motion probe. A
        distill stage adds its own (`DistillStage.distill_probe`: the student against the teacher on
        `"distill_clips"` fixed clips, 8 by default). Its time is not counted as training time."""
        opts = dict(self.spec.probe)
        photos = opts.pop("camera_photos", None)
        sources = opts.pop("camera_sources", 0)
        motion = opts.pop("motion", True)  # false: the camera probe only (models that know no shapes)
        distill_clips = opts.pop("distill_clips", 8)
        distill_probe = getattr(self.stage, "distill_probe", None)
        t0 = time.time()
        bf16 = self.spec.bf16
        with self.ema_weights(), torch.no_grad(), \
                (torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()):
            res = motion_probe(self.stage.bundle, **opts) if motion else {}
            if photos is not None:
                res.update(camera_probe(self.stage.bundle, photos or None, sources=sources,
                                        **{k: v for k, v in opts.items() if k in ("steps", "cfg", "seed")}))
            if distill_probe is not None:
                res.update(distill_probe(clips=distill_clips, seed=opts.get("seed", 0)))
        rec = {"event": "probe", "step": self.step, "train_min": round(self.train_seconds / 60, 2), **res,
               "probe_seconds": round(time.time() - t0, 1)}
        self.log(rec)
        if not self.quiet:
            print(f"[probe] {json.dumps(rec)}", flush=True)
        return rec

    # ---- the loop ---------------------------------------------------------------------------------------
    def log(self, rec: dict) -> None:
        if self.rank == 0:
            with open(self.out / "train.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")

    def should_stop(self, start: float) -> bool:
        stop = False
        if self.max_steps is not None and self.step >= int(self.max_steps):
            stop = True
        if self.max_minutes is not None and (time.time() - start) / 60 >= float(self.max_minutes):
            stop = True
        if (self.out / "STOP").exists():  # `touch OUT/STOP`: stop cleanly (checkpoint + export)
            stop = True
        if self.world > 1:
            flag = torch.tensor([int(stop)], device=self.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    def run(self) -> dict:
        counts = self.stage.counts()
        if self.rank == 0:
            msg = (f"[train {self.spec.stage}] start step {self.step}: trainable {counts['trainable']:,} / "
                   f"frozen {counts['frozen']:,} parameters, world {self.world}, out {self.out}")
            print(msg, flush=True)
            self.log({"event": "start", "step": self.step, **counts, "world_size": self.world})
        ckpt_every = self.spec.checkpoint_minutes * 60
        log_every = self.spec.log_every
        start = last_ckpt = last_probe = time.time()
        probe_every = self.spec.probe_minutes * 60
        if probe_every and self.step == 0 and self.rank == 0:
            self.probe()  # the starting point of the curve
        acc, n_acc, t_acc = 0.0, 0, time.time()
        data = getattr(self.stage, "data", None)
        waited = getattr(data, "wait_seconds", 0.0)  # seconds spent waiting for decoded videos (folder data)
        bar = tqdm(total=self.max_steps, initial=self.step, disable=self.quiet or self.rank != 0,
                   mininterval=self.spec.tqdm_interval, desc=self.spec.stage)
        while not self.should_stop(start):
            t0 = time.time()
            loss = self.train_step()
            self.train_seconds += time.time() - t0
            self.last_loss = loss
            acc, n_acc = acc + loss, n_acc + 1
            bar.update(1)
            if self.step % log_every == 0:
                dt = (time.time() - t_acc) / n_acc
                bar.set_postfix(loss=f"{acc / n_acc:.4f}", s_per_step=f"{dt:.2f}")
                rec = {"step": self.step, "loss": acc / n_acc, "lr": self.lr_at(self.step - 1),
                       "sec_per_step": dt, "train_min": self.train_seconds / 60}
                if hasattr(data, "wait_seconds"):
                    rec["data_wait_s"] = round(data.wait_seconds - waited, 3)
                    if rec["data_wait_s"] > 0.1 * dt * n_acc and self.rank == 0:
                        bar.write(f"[train] waited {rec['data_wait_s']:.1f} s for data over the last {n_acc} steps "
                                  f"(data.workers decodes videos ahead)")
                    waited = data.wait_seconds
                self.log(rec)
                acc, n_acc, t_acc = 0.0, 0, time.time()
            due = time.time() - last_ckpt >= ckpt_every
            if self.world > 1:
                flag = torch.tensor([int(due)], device=self.device)
                dist.broadcast(flag, 0)
                due = bool(flag.item())
            if due:
                self.save()
                if self.spec.export_every_checkpoint:
                    self.export()
                last_ckpt = time.time()
            if probe_every and self.rank == 0 and time.time() - last_probe >= probe_every:
                self.probe()
                last_probe = time.time()
        bar.close()
        if (self.out / "STOP").exists() and self.rank == 0:
            (self.out / "STOP").unlink()
        self.save()
        path = self.export()
        if self.spec.export and self.rank == 0:
            self.export(self.spec.export)
        if self.spec.dump_rank_weights:  # DDP test: every rank writes what it holds
            atomic_save_tensors(self.out / f"rank{self.rank}.safetensors",
                                 {f"p{i}": p.detach().cpu().contiguous() for i, p in enumerate(self.params)})
        if self.rank == 0:
            self.log({"event": "end", "step": self.step, "train_min": self.train_seconds / 60})
            print(f"[train {self.spec.stage}] done at step {self.step} ({self.train_seconds / 60:.1f} min "
                  f"training), exported {path}", flush=True)
        return {"step": self.step, "train_minutes": self.train_seconds / 60, "out": str(self.out)}
