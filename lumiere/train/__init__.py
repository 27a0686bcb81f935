"""Training for every Lumiere stage: `python -m lumiere train STAGE --config FILE [--resume] [--out DIR]`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .stages import STAGES, build_stage, load_spec
from .trainer import Trainer

__all__ = ["STAGES", "Trainer", "add_train_args", "build_stage", "load_spec", "train_command"]


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("stage", choices=STAGES, help="which stage to train")
    parser.add_argument("--config", required=True, help="training config (JSON), e.g. configs/t2i.json")
    parser.add_argument("--resume", action="store_true", help="continue exactly from the run folder's last checkpoint")
    parser.add_argument("--out", default=None, help="run folder (checkpoints, loss log); default from the config")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (checkpoint + export) after this long")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps in total")
    parser.add_argument("--init", default=None, help="override the config's 'init' checkpoint (previous stage)")
    parser.add_argument("--export", default=None, help="also write the EMA model to this file at the end")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the config's 'threads', else half the cores)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a top-level config value, e.g. --set batch_size=16")
    return parser


def train_command(args: argparse.Namespace) -> int:
    spec = load_spec(args.config)
    spec["config_file"] = str(args.config)
    if spec.get("stage", args.stage) != args.stage:
        raise SystemExit(f"--config {args.config} is for stage {spec.get('stage')!r}, not {args.stage!r}")
    spec["stage"] = args.stage
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            spec[k] = json.loads(v)
        except json.JSONDecodeError:
            spec[k] = v
    if args.threads:
        spec["threads"] = args.threads
    if args.init:
        spec["init"] = args.init
    if args.export:
        spec["export"] = args.export
    Trainer(spec, out=args.out, resume=args.resume, max_minutes=args.max_minutes, max_steps=args.max_steps).run()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumiere.train")
    add_train_args(p)
    return train_command(p.parse_args(argv))
