"""One table of what training and sampling cost on this machine: every stage for a few hundred steps at a
mid-size preset, then sampling; steps/s, model FLOPs utilisation (against the machine's measured bf16 peak)
and peak memory. Meant for one GPU in <= 8 minutes:

    python scripts/gpu_check.py --device cuda --preset demo --steps 300 --batch 16 [--out docs/gpu_check.md]

and tested on CPU with the tiny preset (`--device cpu --preset tiny --steps 2`).
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumiere.bench import machine_peak  # noqa: E402
from lumiere.flops import count_flops  # noqa: E402
from lumiere.pipeline import generate  # noqa: E402
from lumiere.train.trainer import Trainer  # noqa: E402


def peak_memory_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's high-water mark (Linux: KiB)


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stage_specs(preset: str, batch: int) -> list[dict]:
    """The five stages in the paper's order; each later one starts from the previous export (`init`)."""
    ssr_preset = "ssr_demo" if preset != "tiny" else "tiny"
    ssr_model = {} if preset != "tiny" else {"scale": 2, "resolution": 32, "num_frames": 4}
    return [
        {"stage": "t2i", "preset": preset, "batch_size": batch * 4},
        {"stage": "temporal", "preset": preset, "batch_size": batch, "init": "{t2i}", "t_power": 0.5},
        {"stage": "conditioning", "preset": preset, "batch_size": batch, "init": "{temporal}",
         "tasks": {"text": 0.4, "image_to_video": 0.2, "inpaint": 0.1, "outpaint": 0.1, "keyframes": 0.1,
                   "extend": 0.1}},
        {"stage": "ssr", "preset": ssr_preset, "model": ssr_model, "batch_size": batch},
        {"stage": "style", "preset": preset, "batch_size": batch * 4, "init": "{conditioning}"},
    ]


def run(device: str, preset: str, steps: int, batch: int, log=print) -> list[dict]:
    peak = machine_peak(3, device)["bf16"]["peak_gflops"]
    rows, exports = [], {}
    with tempfile.TemporaryDirectory() as d:
        for spec in stage_specs(preset, batch):
            spec = copy.deepcopy(spec)
            if "init" in spec:
                spec["init"] = spec["init"].format(**exports)
            spec.update(device=device, bf16=True, log_every=10 ** 9, checkpoint_minutes=10 ** 6,
                        export_every_checkpoint=False, warmup=10)
            out = Path(d) / spec["stage"]
            trainer = Trainer(spec, out=out, quiet=True)
            flops = count_flops(trainer.train_step)  # one step, counted
            sync(device)
            reset_peak(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            sync(device)
            seconds = time.perf_counter() - t0
            exports[spec["stage"]] = str(trainer.export())
            step_s = seconds / steps
            row = {"what": f"train {spec['stage']}", "batch": trainer.stage.batch_size, "steps": steps,
                   "steps_per_s": round(1 / step_s, 2), "gflop_per_step": round(flops / 1e9, 1),
                   "mfu_percent": round(100 * flops / step_s / 1e9 / peak, 1),
                   "peak_memory_mib": round(peak_memory_mib(device), 1)}
            rows.append(row)
            log(json.dumps(row))
        from lumiere.checkpoint import load_model
        bundle = load_model(exports["conditioning"], device=device)
        reset_peak(device)
        generate(bundle, "a red circle moving left on black", steps=2)
        sync(device)
        t0 = time.perf_counter()
        generate(bundle, "a red circle moving left on black", steps=25, cfg=4.0)
        sync(device)
        rows.append({"what": "sample 1 clip (25 DDIM steps, CFG)", "seconds": round(time.perf_counter() - t0, 2),
                     "peak_memory_mib": round(peak_memory_mib(device), 1)})
        log(json.dumps(rows[-1]))
    return rows


def markdown(rows: list[dict], device: str, preset: str) -> str:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    lines = [f"GPU check on {name} ({device}), preset `{preset}`, torch {torch.__version__}, bf16", "",
             "| what | batch | steps/s | GFLOP/step | MFU % | sampling s | peak memory MiB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r.get('batch', '')} | {r.get('steps_per_s', '')} | {r.get('gflop_per_step', '')} "
                     f"| {r.get('mfu_percent', '')} | {r.get('seconds', '')} | {r['peak_memory_mib']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="demo")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    rows = run(args.device, args.preset, args.steps, args.batch, log=lambda s: print(s, file=sys.stderr, flush=True))
    table = markdown(rows, args.device, args.preset)
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
