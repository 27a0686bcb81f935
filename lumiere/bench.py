"""`python -m lumiere bench`: what STUNet's temporal down-sampling buys, measured.

STUNet is compared with the same frozen U-Net inflated the AnimateDiff way: no temporal down-sampling, so
every level runs at the full frame rate, with a temporal-attention module after every res block at every level.
Both see the same input; forward time (median, no_grad) and peak tensor memory are measured side by side at
each frame count, and the ratios are baseline / STUNet (> 1: STUNet is cheaper).

Peak memory is the high-water mark of the bytes held by tensors that the forward allocates, from the CPU
allocator events of torch.profiler (`profile_memory=True`); the weights are allocated before and not counted.
It is measured twice: under no_grad (inference), and with autograd on the temporal layers (what the temporal
training stage holds at the end of its forward). Under no_grad the peak sits in the finest level, which runs
at the full frame rate in both designs, so that ratio stays near 1; the saving shows in time and in training.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from itertools import accumulate


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as JSON only")
    p.add_argument("--preset", default="demo", help="model preset to build (random weights)")
    p.add_argument("--resolution", type=int, default=None, help="frame size (default: the preset's)")
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 80])
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per point (the median is reported)")
    p.add_argument("--attn-mode", choices=("temporal", "spacetime"), default=None,
                   help="STUNet's coarsest-level attention (default: the preset's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: stable timings on a shared machine; 0: torch's default)")
    p.set_defaults(func=bench_command)


def full_rate_inflation(unet, attn_layers: int, head_dim: int):
    """The AnimateDiff-style contrast: the same U-Net, no temporal resampling, and at every level (and the
    middle) a temporal-attention module over all frames after each res block, instead of STUNet's conv blocks
    and coarsest-level attention. Built as a STUNet whose temporal blocks are swapped, so the forward and
    frame folding are literally the same code."""
    from torch import nn

    from .configs import TemporalConfig
    from .models.stunet import STUNet
    from .models.temporal import AttentionInflationBlock

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


@contextmanager
def _quiet_stderr():
    """Silence the profiler backend's start/stop lines, which it writes straight to file descriptor 2."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_bytes(fn) -> int:
    """High-water mark of tensor bytes allocated (net of frees) while `fn` runs."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    return max(accumulate(n for _, n in mem), default=0)


def measure(model, x, ts, ctx, repeats: int) -> dict:
    import torch

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
              attn_mode: str | None = None, threads: int | None = None, log=None) -> dict:
    import torch

    from .configs import get_preset
    from .models.stunet import inflate
    from .models.unet2d import UNet2D

    if threads:
        torch.set_num_threads(threads)
    cfg = get_preset(preset)
    if cfg.temporal is None:
        raise ValueError(f"preset: {preset!r} has no temporal layers")
    tcfg = cfg.temporal if attn_mode is None else dataclasses.replace(cfg.temporal, attn_mode=attn_mode)
    res = resolution or cfg.resolution
    torch.manual_seed(0)
    unet = UNet2D(cfg.unet).eval()
    stunet = inflate(unet, tcfg).eval()
    baseline = full_rate_inflation(unet, tcfg.attn_layers, tcfg.attn_head_dim).eval()
    for m in (stunet, baseline):
        m.requires_grad_(False)
    for f in frames:
        stunet.check_num_frames(f)
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
            log(f"{f:3d} frames  STUNet vs baseline: time {s['time_s']:.3f}s vs {b['time_s']:.3f}s (x{r['time']:.2f})"
                f"  peak {s['peak_mib']:.1f} vs {b['peak_mib']:.1f} MiB (x{r['memory']:.2f})"
                f"  with grad {s['train_peak_mib']:.1f} vs {b['train_peak_mib']:.1f} MiB (x{r['train_memory']:.2f})")

    def params(m, temporal_only=False):
        return sum(p.numel() for p in (m.temporal_parameters() if temporal_only else m.parameters()))

    return {
        "preset": preset, "resolution": res, "batch": 1, "repeats": repeats, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "stunet": {"params": params(stunet), "temporal_params": params(stunet, True),
                   "temporal_down": list(tcfg.temporal_down), "attn_mode": tcfg.attn_mode,
                   "attn_layers": tcfg.attn_layers},
        "baseline": {"params": params(baseline), "temporal_params": params(baseline, True),
                     "description": "same U-Net, no temporal down-sampling; 1-D temporal attention "
                                    f"({tcfg.attn_layers} layer(s)) after every res block at every level"},
        "ratio_definition": "baseline / stunet",
        "results": results,
    }


def bench_command(args) -> int:
    log = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    report = run_bench(args.preset, args.frames, args.resolution, args.repeats, args.attn_mode, args.threads, log)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("ratios (baseline / STUNet):")
        for r in report["results"]:
            q = r["ratio"]
            print(f"  {r['frames']:3d} frames: time x{q['time']:.2f}, peak memory x{q['memory']:.2f}, "
                  f"peak memory with grad x{q['train_memory']:.2f}")
    return 0
