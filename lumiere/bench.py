"""`python -m lumiere bench`: what STUNet's temporal down-sampling buys, and how fast this code runs, measured.

Everything is measured in one run on the machine at hand and reported as ratios (one machine's noise cancels
in a ratio of interleaved measurements, not across runs):
- `peak`: the machine's own fp32 and bf16 peak, from a large matmul and a large channels_last conv;
- `forward`: STUNet against the AnimateDiff-style inflation (below) and against the per-frame T2I (the same
  U-Net run on every frame, `pipeline.FramewiseT2I`): time, FLOPs (`flops.count_flops`) and both ratios;
- `train_step`: one bf16 training step of the temporal stage (frozen T2I, batch `--train-batch`): seconds,
  GFLOP/s and % of the measured bf16 peak;
- `sampling`: seconds per clip, 25 DDIM steps with CFG, fp32 against bf16 (`--precision` in the CLI).

STUNet is compared with the same frozen U-Net inflated the AnimateDiff way: no temporal down-sampling, so
every level runs at the full frame rate, with a temporal-attention module after every res block at every level.
Both see the same input; forward time (median, no_grad) and peak tensor memory are measured side by side at
each frame count, and the ratios are baseline / STUNet (> 1: STUNet is cheaper).

Peak memory is the high-water mark of the bytes held by tensors that the forward allocates (`memory.peak_bytes`:
the CPU allocator events of torch.profiler); the weights are allocated before and not counted.
It is measured twice: under no_grad (inference), and with autograd on the temporal layers (what the temporal
training stage holds at the end of its forward). Under no_grad the peak sits in the finest level, which runs
at the full frame rate in both designs, so that ratio stays near 1; the saving shows in time and in training.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from .checkpoint import build_bundle
from .compute import PRECISIONS, prepare_for_inference, set_threads, to_compute_layout
from .configs import TemporalConfig, get_preset
from .data.procedural import VOCAB
from .errors import as_input_error
from .flops import count_flops
from .memory import peak_bytes, training_memory_estimate
from .models.stunet import STUNet, inflate
from .models.temporal import AttentionInflationBlock
from .models.unet2d import UNet2D
from .pipeline import FramewiseT2I, generate
from .train.trainer import TrainState


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as JSON only")
    p.add_argument("--preset", default="demo", help="model preset to build (random weights)")
    p.add_argument("--resolution", type=int, default=None, help="frame size (default: the preset's)")
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 80])
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per point (the median is reported)")
    p.add_argument("--attn-mode", choices=("temporal", "spacetime"), default=None,
                   help="STUNet's coarsest-level attention (default: the preset's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: stable timings on a shared machine; 0: half the cores)")
    p.add_argument("--train-batch", type=int, default=8, help="clips per training step in the train_step section")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="what to measure (default: all)")
    p.add_argument("--data", default=None,
                   help="data section: a folder of videos to decode (default: 16 synthetic 256x256 clips)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4],
                   help="data section: decoding threads to compare (data.workers)")
    p.set_defaults(func=bench_command)


SECTIONS = ("memory", "peak", "forward", "train_step", "sampling", "train_memory", "data")


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_peak(repeats: int = 5, device: str = "cpu") -> dict:
    """GFLOP/s of a 2048^3 matmul and of a 3x3 conv (channels_last, 64 -> 64 ch, 64 x 32 x 32), fp32 and bf16;
    the peak of a dtype is the faster of the two. On a GPU the work is 8x larger and synchronized."""
    gpu = device != "cpu"
    n, batch = (4096, 512) if gpu else (2048, 64)
    sync = torch.cuda.synchronize if gpu and torch.cuda.is_available() else (lambda: None)

    def timed(fn):
        def run():
            fn()
            sync()
        return median_seconds(run, repeats)

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
        x = torch.randn(batch, 64, 32, 32, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
        w = torch.randn(64, 64, 3, 3, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
        mm = 2 * n ** 3 / timed(lambda: a @ b) / 1e9
        conv = 2 * batch * 64 * 64 * 32 * 32 * 9 / timed(lambda: torch.nn.functional.conv2d(x, w, padding=1)) / 1e9
        out[name] = {"matmul_gflops": round(mm, 1), "conv_gflops": round(conv, 1), "peak_gflops": round(max(mm, conv), 1)}
    return out


def forward_comparison(preset: str, frames, resolution: int | None, repeats: int, attn_mode: str | None,
                       log=None) -> list[dict]:
    """STUNet vs AnimateDiff-style inflation vs per-frame T2I: forward time (fp32, no_grad, the library's
    channels_last layout) and FLOPs, per frame count; ratios are other / STUNet (> 1: STUNet is cheaper)."""
    cfg, stunet, baseline = _models(preset, attn_mode)
    per_frame = FramewiseT2I(stunet.unet)
    for m in (stunet, baseline):
        to_compute_layout(m)
    res = resolution or cfg.resolution
    ctx = torch.randn(1, cfg.text.max_tokens, cfg.unet.context_dim)
    ts = torch.tensor([0.5])
    rows = []
    for f in frames:
        stunet.check_num_frames(f)
        x = torch.randn(1, cfg.unet.in_channels, f, res, res)
        row = {"frames": f}
        with torch.no_grad():
            nets = {"stunet": stunet, "animatediff": baseline, "per_frame_t2i": per_frame}
            for name, net in nets.items():
                row[name] = {"gflop": round(count_flops(lambda: net(x, ts, ctx)) / 1e9, 3)}
            # interleaved repeats, so that a slow moment of the machine hits every net alike
            times = {name: [] for name in nets}
            for name, net in nets.items():
                net(x, ts, ctx)
            for _ in range(repeats):
                for name, net in nets.items():
                    t0 = time.perf_counter()
                    net(x, ts, ctx)
                    times[name].append(time.perf_counter() - t0)
        for name in nets:
            row[name]["time_s"] = round(statistics.median(times[name]), 4)
        s = row["stunet"]
        for other in ("animatediff", "per_frame_t2i"):
            o = row[other]
            # the median of the per-repeat ratios: each pair ran back to back, so the machine's slow moments cancel
            ratio = statistics.median(a / b for a, b in zip(times[other], times["stunet"]))
            row[f"vs_{other}"] = {"time_ratio": round(ratio, 3), "flop_ratio": round(o["gflop"] / s["gflop"], 3)}
            row[f"vs_{other}"]["time_over_flop_ratio"] = round(
                row[f"vs_{other}"]["time_ratio"] / row[f"vs_{other}"]["flop_ratio"], 3)
        row["stunet_time_vs_per_frame_t2i"] = round(
            statistics.median(a / b for a, b in zip(times["stunet"], times["per_frame_t2i"])), 3)
        rows.append(row)
        if log:
            log(f"{f:3d} frames  STUNet {s['time_s']:.3f}s / {s['gflop']:.1f} GFLOP;  vs AnimateDiff: time "
                f"x{row['vs_animatediff']['time_ratio']:.2f}, FLOPs x{row['vs_animatediff']['flop_ratio']:.2f};  "
                f"STUNet time / per-frame T2I time {row['stunet_time_vs_per_frame_t2i']:.2f} "
                f"(FLOPs {1 / row['vs_per_frame_t2i']['flop_ratio']:.2f})")
    return rows


def train_step_bench(preset: str, batch: int, repeats: int, bf16_peak: dict | None, log=None) -> dict:
    """One temporal-stage step (frozen T2I, text-to-video, bf16 autocast, channels_last): `TrainState.train_step`."""
    cfg = get_preset(preset)  # a fresh copy
    cfg.temporal, cfg.role, cfg.conditioning = None, "t2i", "none"
    cfg.unet.in_channels = 3
    cfg.text.vocab = tuple(VOCAB)
    spec = {"stage": "temporal", "preset": preset, "batch_size": batch, "bf16": True, "seed": 0, "t_power": 0.5}
    threads = torch.get_num_threads()
    state = TrainState(spec, init_bundle=build_bundle(cfg))
    torch.set_num_threads(threads)  # the spec sets its own default; the bench's --threads rules here
    flops = count_flops(state.train_step)
    sec = median_seconds(state.train_step, repeats)
    gflops = flops / sec / 1e9
    out = {"batch": batch, "frames": cfg.num_frames, "size": cfg.resolution, "seconds": round(sec, 3),
           "gflop_per_step": round(flops / 1e9, 2), "gflops": round(gflops, 1)}
    if bf16_peak:
        out["percent_of_bf16_peak"] = round(100 * gflops / bf16_peak["peak_gflops"], 1)
        out["percent_of_bf16_conv_peak"] = round(100 * gflops / bf16_peak["conv_gflops"], 1)
    if log:
        log(f"train step ({batch} clips): {sec:.2f} s, {gflops:.0f} GFLOP/s"
            + (f" = {out['percent_of_bf16_peak']:.0f}% of the bf16 peak, {out['percent_of_bf16_conv_peak']:.0f}% "
               f"of the bf16 conv peak" if bf16_peak else ""))
    return out


def synthetic_videos(folder, n: int = 16, frames: int = 48, size: int = 256, fps: int = 8):
    """`n` seeded H.264 clips (moving gradients, a caption each) in `folder`: a stand-in for a user's videos."""
    import numpy as np

    from .media import _write_mp4

    folder = Path(folder)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi, 3)
        video = np.stack([np.stack([127 + 120 * np.sin(xx / 17 + yy / 23 + t / 3 + p) for p in phase], -1)
                          for t in range(frames)]).astype(np.uint8)
        _write_mp4(video, folder / f"clip{i:02d}.mp4", fps)
        (folder / f"clip{i:02d}.txt").write_text("a moving gradient")
    return folder


def data_bench(folder, frames: int, size: int, workers=(0, 1, 2, 4), step_seconds: float | None = None,
               batch: int = 8, log=None) -> dict:
    """Clips per second the folder data (`lumiere.data.folder`) decodes into its cache with each number of
    decoding threads, against what a training step consumes (`batch` clips per `step_seconds`): a ratio >= 1
    keeps the trainer fed (it then never waits once the cache is warm either way)."""
    from .data.folder import FolderDataset
    rows = []
    for w in workers:
        t0 = time.perf_counter()
        data = FolderDataset(folder, frames=frames, size=size, workers=w)
        for i in range(len(data)):
            data.video(i)  # waits for the threads' decode, or decodes here (w = 0)
        sec = time.perf_counter() - t0
        row = {"workers": w, "videos": len(data), "seconds": round(sec, 3),
               "videos_per_s": round(len(data) / sec, 2)}
        if step_seconds:
            row["fed_ratio"] = round(row["videos_per_s"] / (batch / step_seconds), 2)
        rows.append(row)
        if log:
            log(f"decode {len(data)} videos with {w} thread(s): {sec:.2f} s = {row['videos_per_s']:.1f} videos/s"
                + (f" (x{row['fed_ratio']:.2f} what a {step_seconds:.2f} s step of {batch} clips takes)"
                   if step_seconds else ""))
    return {"frames": frames, "size": size, "batch": batch, "step_seconds": step_seconds, "rows": rows}


def sampling_bench(preset: str, steps: int = 25, repeats: int = 2, log=None) -> dict:
    """Seconds per clip (DDIM, CFG 4) with fp32 and with bf16 weights (random weights, the preset's clip)."""
    out = {"steps": steps, "cfg": 4.0}
    bundles = {}
    for precision in PRECISIONS:
        cfg = get_preset(preset)  # a fresh copy
        cfg.text.vocab = tuple(VOCAB)
        bundles[precision] = build_bundle(cfg)
        prepare_for_inference(bundles[precision].model, precision)
    times = {p: [] for p in bundles}
    for p, b in bundles.items():
        generate(b, "a red circle moving left on black", steps=2)
    for _ in range(repeats):
        for p, b in bundles.items():
            t0 = time.perf_counter()
            generate(b, "a red circle moving left on black", steps=steps, cfg=4.0)
            times[p].append(time.perf_counter() - t0)
    for p in bundles:
        out[f"{p}_seconds_per_clip"] = round(statistics.median(times[p]), 2)
    out["bf16_speedup"] = round(out["fp32_seconds_per_clip"] / out["bf16_seconds_per_clip"], 2)
    if log:
        log(f"sampling ({steps} steps, CFG): fp32 {out['fp32_seconds_per_clip']:.2f} s, "
            f"bf16 {out['bf16_seconds_per_clip']:.2f} s per clip (x{out['bf16_speedup']:.2f})")
    return out


def _models(preset: str, attn_mode: str | None):
    """(config, STUNet, AnimateDiff-style inflation) of a preset with seeded random weights, in eval mode."""
    cfg = get_preset(preset)
    if cfg.temporal is None:
        raise ValueError(f"preset: {preset!r} has no temporal layers")
    tcfg = cfg.temporal if attn_mode is None else dataclasses.replace(cfg.temporal, attn_mode=attn_mode)
    cfg.temporal = tcfg
    torch.manual_seed(0)
    unet = UNet2D(cfg.unet).eval()
    stunet = inflate(unet, tcfg).eval()
    baseline = full_rate_inflation(unet, tcfg.attn_layers, tcfg.attn_head_dim).eval()
    for m in (stunet, baseline):
        m.requires_grad_(False)
    return cfg, stunet, baseline


def full_rate_inflation(unet, attn_layers: int, head_dim: int):
    """The AnimateDiff-style contrast: the same U-Net, no temporal resampling, and at every level (and the
    middle) a temporal-attention module over all frames after each res block, instead of STUNet's conv blocks
    and coarsest-level attention. Built as a STUNet whose temporal blocks are swapped, so the forward and
    frame folding are literally the same code."""
    levels, n = unet.cfg.num_levels, unet.cfg.num_res_blocks
    model = STUNet(unet, TemporalConfig(temporal_down=(False,) * (levels - 1)))
    ch = [unet.cfg.base_channels * m for m in unet.cfg.channel_mult]

    def motion(level: int) -> nn.Module:
        return AttentionInflationBlock(ch[level], unet.emb_dim, unet.cfg.context_dim, attn_layers, head_dim,
                                       mode="temporal", text_cross_attention=False)

    model.down_blocks = nn.ModuleList(nn.ModuleList(motion(lvl) for _ in range(n)) for lvl in range(levels))
    model.mid_block = motion(levels - 1)
    model.up_blocks = nn.ModuleList(nn.ModuleList(motion(lvl) for _ in range(n + 1))
                                    for lvl in reversed(range(levels)))
    return model


def measure(model, x, ts, ctx, repeats: int) -> dict:
    with torch.no_grad():
        model(x, ts, ctx)  # warm-up (one-time allocations, kernel selection)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x, ts, ctx)
            times.append(time.perf_counter() - t0)
        peak = peak_bytes(lambda: model(x, ts, ctx))
    # what the temporal training stage holds: the forward's autograd graph for the (trainable) temporal layers
    for p in model.temporal_parameters():
        p.requires_grad_(True)
    train_peak = peak_bytes(lambda: model(x, ts, ctx))
    model.requires_grad_(False)
    return {"time_s": round(statistics.median(times), 4), "peak_mib": round(peak / 2 ** 20, 2),
            "train_peak_mib": round(train_peak / 2 ** 20, 2)}


def run_bench(preset: str = "demo", frames=(16, 32, 64, 80), resolution: int | None = None, repeats: int = 5,
              attn_mode: str | None = None, threads: int | None = None, log=None, train_batch: int = 8,
              sections=SECTIONS, data: str | None = None, workers=(0, 1, 2, 4)) -> dict:
    set_threads(threads)
    cfg, stunet, baseline = _models(preset, attn_mode)
    tcfg = cfg.temporal
    res = resolution or cfg.resolution
    for f in frames:
        stunet.check_num_frames(f)

    def params(m, temporal_only=False):
        return sum(p.numel() for p in (m.temporal_parameters() if temporal_only else m.parameters()))

    report = {
        "preset": preset, "resolution": res, "batch": 1, "repeats": repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "stunet": {"params": params(stunet), "temporal_params": params(stunet, True),
                   "temporal_down": list(tcfg.temporal_down), "attn_mode": tcfg.attn_mode,
                   "attn_layers": tcfg.attn_layers},
        "baseline": {"params": params(baseline), "temporal_params": params(baseline, True),
                     "description": "same U-Net, no temporal down-sampling; 1-D temporal attention "
                                    f"({tcfg.attn_layers} layer(s)) after every res block at every level"},
        "ratio_definition": "baseline / stunet",
    }
    if "memory" in sections:
        ctx = torch.randn(1, cfg.text.max_tokens, cfg.unet.context_dim)
        ts = torch.tensor([0.5])
        results = []
        for f in frames:
            x = torch.randn(1, cfg.unet.in_channels, f, res, res)
            row = {"frames": f, "stunet": measure(stunet, x, ts, ctx, repeats),
                   "baseline": measure(baseline, x, ts, ctx, repeats)}
            s, b = row["stunet"], row["baseline"]
            row["ratio"] = {k: round(b[v] / s[v], 3) for k, v in
                            (("time", "time_s"), ("memory", "peak_mib"), ("train_memory", "train_peak_mib"))}
            results.append(row)
            if log:
                r = row["ratio"]
                log(f"{f:3d} frames  STUNet vs baseline: time {s['time_s']:.3f}s vs {b['time_s']:.3f}s "
                    f"(x{r['time']:.2f})  peak {s['peak_mib']:.1f} vs {b['peak_mib']:.1f} MiB (x{r['memory']:.2f})"
                    f"  with grad {s['train_peak_mib']:.1f} vs {b['train_peak_mib']:.1f} MiB "
                    f"(x{r['train_memory']:.2f})")
        report["results"] = results
    if "peak" in sections:
        report["peak"] = machine_peak(repeats)
        if log:
            log(f"machine peak: fp32 {report['peak']['fp32']['peak_gflops']:.0f}, "
                f"bf16 {report['peak']['bf16']['peak_gflops']:.0f} GFLOP/s")
    if "forward" in sections:
        report["forward"] = forward_comparison(preset, frames, resolution, repeats, attn_mode, log)
    if "train_step" in sections:
        bf16_peak = report.get("peak", {}).get("bf16")
        report["train_step"] = train_step_bench(preset, train_batch, max(2, repeats // 2), bf16_peak, log)
    if "sampling" in sections:
        report["sampling"] = sampling_bench(preset, repeats=max(1, repeats // 2), log=log)
    if "data" in sections:
        step = report.get("train_step", {}).get("seconds")
        with tempfile.TemporaryDirectory() as tmp:
            folder = data or synthetic_videos(tmp)
            report["data"] = data_bench(folder, cfg.num_frames, res, workers, step, train_batch, log)
        report["data"]["source"] = data or "16 synthetic H.264 clips, 48 frames of 256 x 256"
    if "train_memory" in sections:
        report["train_memory"] = m = training_memory_estimate(preset, max(frames), resolution)
        if log:
            log(f"training memory estimate ({preset}, {m['frames']} frames of {m['resolution']}^2, batch 1, bf16): "
                f"{m['total_gib']} GiB, {m['total_checkpointed_gib']} GiB with activation checkpointing "
                f"(weights + grads + AdamW {m['weights_grads_optimizer_gib']} GiB)")
    return report


def bench_command(args) -> int:
    try:  # the inputs, checked before any measurement
        get_preset(args.preset)
        set_threads(args.threads)
    except ValueError as e:
        raise as_input_error(e, {"preset": "--preset", "threads": "--threads"}) or e from None
    log = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    report = run_bench(args.preset, args.frames, args.resolution, args.repeats, args.attn_mode, args.threads, log,
                       args.train_batch, tuple(args.sections), args.data, tuple(args.workers))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("ratios (baseline / STUNet):")
        for r in report.get("results", []):
            q = r["ratio"]
            print(f"  {r['frames']:3d} frames: time x{q['time']:.2f}, peak memory x{q['memory']:.2f}, "
                  f"peak memory with grad x{q['train_memory']:.2f}")
    return 0
