"""Training for every Lumiere stage: `python -m lumiere train STAGE --config FILE [--resume] [--out DIR]`."""
from __future__ import annotations

import argparse
import json
import sys

from ..checkpoint import CheckpointError
from ..compute import keep_freed_memory
from ..errors import InputError, as_input_error
from .spec import TrainSpec, load_spec
from .stages import STAGES, build_stage
from .trainer import Trainer, TrainState

__all__ = ["STAGES", "TrainSpec", "TrainState", "Trainer", "add_train_args", "build_stage", "load_spec", "train_command"]


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
    try:
        with open(args.config) as f:
            raw = json.load(f)
    except OSError as e:
        raise InputError(f"--config: cannot read {args.config}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"--config: {args.config} is not JSON: {e}") from None
    if raw.get("stage", args.stage) != args.stage:
        raise InputError(f"--config: {args.config} is for stage {raw.get('stage')!r}, not {args.stage!r}")
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
    try:  # the spec and what it names (init checkpoint, data, stage settings); errors in training itself are bugs
        spec = TrainSpec.from_dict(raw)
        trainer = Trainer(spec, out=args.out, resume=args.resume, max_minutes=args.max_minutes,
                          max_steps=args.max_steps)
    except ValueError as e:
        if isinstance(e, CheckpointError):
            raise
        error = as_input_error(e)
        if error is None:
            raise
        raise InputError(f"--config {args.config}: {error}") from None
    trainer.run()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lumiere.train")
    add_train_args(p)
    keep_freed_memory()  # this process is ours (lumiere.compute)
    try:
        return train_command(p.parse_args(argv))
    except (InputError, CheckpointError) as e:  # the project's own errors; anything else is a bug: traceback
        print(f"lumiere.train: error: {e}", file=sys.stderr)
        return 2
