"""Training for every Lumiere stage: `python -m lumiere train STAGE --config FILE [--resume] [--out DIR]`."""
from __future__ import annotations

import argparse
import json
import sys

from .spec import TrainSpec, load_spec
from .stages import STAGES, build_stage
from .trainer import Trainer

__all__ = ["STAGES", "TrainSpec", "Trainer", "add_train_args", "build_stage", "load_spec", "train_command"]


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
    with open(args.config) as f:
        raw = json.load(f)
    if raw.get("stage", args.stage) != args.stage:
        raise ValueError(f"--config: {args.config} is for stage {raw.get('stage')!r}, not {args.stage!r}")
    raw["stage"], raw["config_file"] = args.stage, str(args.config)
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            raw[k] = json.loads(v)
        except json.JSONDecodeError:
            raw[k] = v
    for key, value in (("threads", args.threads), ("init", args.init), ("export", args.export)):
        if value:
            raw[key] = value
    try:
        spec = TrainSpec.from_dict(raw)
    except ValueError as e:
        raise ValueError(f"--config {args.config}: {e}") from None
    Trainer(spec, out=args.out, resume=args.resume, max_minutes=args.max_minutes, max_steps=args.max_steps).run()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumiere.train")
    add_train_args(p)
    try:
        return train_command(p.parse_args(argv))
    except ValueError as e:
        print(f"lumiere.train: error: {e}", file=sys.stderr)
        return 2
