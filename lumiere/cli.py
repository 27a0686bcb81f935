"""`python -m lumiere`: generate, inspect, bench, train, eval.

The commands only parse arguments, read files and call the library (`pipeline.generate` / `upscale`, the
`conditioning` recipes, `stylize`), so the CLI and the ComfyUI nodes share one code path. Bad inputs exit with
status 2 and one line naming the input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import conditioning
from .checkpoint import CheckpointError
from .compute import PRECISIONS, add_device_arg, add_threads_arg, keep_freed_memory
from .multidiffusion import DEFAULT_FUSE, FUSE_METHODS, resolve_window
from .errors import InputError, as_input_error

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "lumiere" / "lumiere_demo_base.safetensors"


def default_model() -> str:
    """The shipped demo model: in the repository (`make demo` writes it there, `pip install -e .` and running
    from the checkout find it), else models/lumiere/ under the current folder."""
    for path in (DEFAULT_MODEL, Path("models") / "lumiere" / DEFAULT_MODEL.name):
        if path.is_file():
            return str(path)
    return str(DEFAULT_MODEL)


def check_default_model(path: str) -> None:
    if path == str(DEFAULT_MODEL) and not DEFAULT_MODEL.is_file():
        raise InputError(f"--model: expected a Lumiere checkpoint; the default, the shipped demo model, is not at "
                         f"{DEFAULT_MODEL} nor in ./models/lumiere/ (a non-editable `pip install` does not carry "
                         f"it): pass --model PATH (the repository's models/lumiere/*.safetensors)")


def media_check(out: str) -> None:
    """The packages `save_video` needs for `out`, checked before sampling (not after it)."""
    import importlib.util

    suffix = Path(out).suffix.lower()
    need = {".mp4": ["av"], ".webp": ["PIL"], ".gif": ["PIL"], "": ["PIL"]}.get(suffix, [])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        names = {"av": "av (PyAV)", "PIL": "pillow"}
        raise InputError(f"--out: writing {out!r} needs {', '.join(names[m] for m in missing)}: "
                         f"pip install 'comfyui-lumiere[media]' (or pip install {' '.join(names[m].split()[0] for m in missing)})")


def warn_prompt(bundle, flag: str, schedule: list) -> None:
    """Say once, on stderr, what the text encoder loses of a prompt (characters, unknown words, length)."""
    enc = bundle.text_encoder
    if enc is None:
        return
    for start, text in schedule:
        name = flag if len(schedule) == 1 else f"{flag} (segment at frame {start})"
        for problem in enc.tokenizer.problems(text, name):
            print(f"lumiere generate: warning: {problem}", file=sys.stderr)


# the library's input names (its errors read "name: expected X, got Y") -> the generate command's flags
FLAGS = {"threads": "--threads", "device": "--device", "context": "--context", "num_frames": "--frames",
         "window": "--window", "overlap": "--overlap", "indices": "--keyframe", "prompt schedule": "--prompt",
         "clip": "--video", "video": "--video", "height": "--height", "width": "--width", "steps": "--steps",
         "strength": "--strength", "denoise": "--strength", "tile": "--tile", "alpha": "--alpha",
         "cfg": "--cfg", "prompt": "--prompt", "negative": "--negative"}

# flags whose value must be a positive whole number (0 is no "default": leave the flag out for that)
POSITIVE = ("frames", "height", "width", "threads", "steps", "ssr_steps", "window", "tile", "context")


def flag_error(e: ValueError) -> ValueError:
    """A library ValueError that names its input, renamed to the flag that carried it; any other ValueError is
    returned as it is (a bug: raised again, it shows its traceback)."""
    return as_input_error(e, FLAGS) or e


# ---------------------------------------------------------------- generate


def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=default_model(),
                   help="base checkpoint (default: the shipped demo model, models/lumiere/lumiere_demo_base.safetensors "
                        "of the checkout)")
    p.add_argument("--prompt", default="", help="text prompt")
    p.add_argument("--negative", default="", help="negative prompt (the unconditional side of CFG)")
    p.add_argument("--frames", type=int, default=None, help="frame count (default: the model's)")
    p.add_argument("--height", type=int, default=None, help="frame height (default: the model's resolution)")
    p.add_argument("--width", type=int, default=None, help="frame width (default: the model's resolution)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the model's: 25, or the steps a distilled model records)")
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's: 4, or 1 for a distilled model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", choices=("ddim", "euler", "dpmpp_2m"), default=None,
                   help="default: each model's (ddim)")
    p.add_argument("--scheduler", choices=("uniform", "karras", "trailing"), default=None,
                   help="default: each model's (uniform; trailing for a distilled model)")
    g = p.add_argument_group("conditioning (<J, C, M>, models with 7 input channels)")
    g.add_argument("--mode", choices=conditioning.MODES, default=None,
                   help="default: image_to_video with --image, else text (or SDEdit with --video)")
    g.add_argument("--image", help="PNG: first frame (image_to_video), still (cinemagraph), or clip to complete")
    g.add_argument("--mask", help="PNG, ComfyUI's convention: white = generate (inpaint) or animate (cinemagraph), "
                                  "black = keep")
    g.add_argument("--replace-known", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the given pixels exactly (known-pixel replacement at every step; default on)")
    g.add_argument("--keyframe", action="append", metavar="FRAME=PNG",
                   help="keyframes mode: an image at a frame number (repeat it; negative counts from the end): "
                        "--keyframe 0=first.png --keyframe=-1=last.png interpolates between two images")
    g.add_argument("--context", type=int, default=None,
                   help="extend mode: known frames per extension pass (default: half the model's frames)")
    g.add_argument("--pad", type=int, nargs=4, metavar=("L", "R", "T", "B"), help="outpaint border in pixels")
    g.add_argument("--video", help="input video (.mp4/.webp/.gif or a folder of frames): SDEdit source in text "
                                   "mode, the clip to complete with --mode inpaint/outpaint/direct (direct: the "
                                   "video is C and --mask marks what to generate)")
    g.add_argument("--strength", type=float, default=None, help="SDEdit strength in (0, 1] (default 0.6)")
    g = p.add_argument_group("long videos and loops (temporal MultiDiffusion of the base over windows of its "
                             "frames); --frames beyond the model's, or a prompt schedule "
                             "\"0: prompt A; 32: prompt B\" (prompt travel), use them too")
    g.add_argument("--loop", action="store_true",
                   help="a seamless loop: windows on a circle, so the last frame flows into the first")
    s = p.add_argument_group("spatial super-resolution (temporal MultiDiffusion)")
    s.add_argument("--ssr", help="SSR checkpoint: upsample the generated clip")
    s.add_argument("--window", type=int, default=None, help="frames per window (default: the SSR model's)")
    s.add_argument("--overlap", type=int, default=None,
                   help="frames shared by consecutive windows (>= 2, < window; default: half the window)")
    s.add_argument("--fuse", choices=FUSE_METHODS, default=DEFAULT_FUSE,
                   help=f"how overlapping windows are averaged (default: {DEFAULT_FUSE})")
    s.add_argument("--tile", type=int, default=None, help="optional spatial tile size for large frames")
    s.add_argument("--ssr-steps", type=int, default=None,
                   help="default: the SSR model's (20, or the steps a distilled SSR records)")
    s.add_argument("--ssr-cfg", type=float, default=None, help="default: the SSR model's (1)")
    t = p.add_argument_group("stylization")
    t.add_argument("--style", help="style T2I checkpoint: interpolate the T2I weights toward it")
    t.add_argument("--alpha", type=float, default=0.75, help="W = alpha W_style + (1 - alpha) W_orig")
    add_device_arg(p)
    p.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                   help="network weights and compute: fp32, or bf16 (about 1.8x faster on CPUs with bf16 units; "
                        "the frames differ from fp32 by ~50 dB PSNR)")
    add_threads_arg(p)
    p.add_argument("--out", default="out/lumiere.webp",
                   help=".webp, .gif, .mp4, or a folder name (no suffix) for PNG frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=generate_command)


def _load(flag: str, path: str):
    from .checkpoint import load_model

    try:
        return load_model(path)
    except ValueError as e:
        raise InputError(f"{flag}: {e}") from None


def _read(flag: str, fn, path: str, *args):
    try:
        return fn(path, *args)
    except ValueError as e:
        raise InputError(f"{flag}: {e}") from None


# the flags that carry each task's source and needs (`conditioning.TASKS`)
SOURCE_FLAGS = {"still": ("image",), "keyframes": ("keyframe",), "clip": ("video",), "video": ("image", "video")}
NEED_FLAGS = {"mask": "mask", "pad": "pad", "indices": "keyframe"}


def _conditioning(args, mode: str, t: int, h: int, w: int):
    """(C, M) for the chosen task (`conditioning.TASKS`: what it needs, its recipe); (None, None) for plain text
    and for extension, which builds its <C, M> per pass (`pipeline.generate_extended`)."""
    from .media import load_image, load_mask, load_video

    task = conditioning.TASKS[mode]
    sources = SOURCE_FLAGS.get(task.source, ())
    if sources and all(getattr(args, name) is None for name in sources):
        raise InputError(f"--{'/--'.join(sources)}: required by --mode {mode}")
    for name in (NEED_FLAGS[n] for n in task.needs):
        if getattr(args, name) is None:
            raise InputError(f"--{name}: required by --mode {mode}")
    if "pad" in task.needs:  # the source is resized to fill the frame minus the border
        left, right, top, bottom = args.pad
        if min(args.pad) < 0 or top + bottom >= h or left + right >= w:
            raise InputError(f"--pad: expected non-negative sizes that leave part of the {h}x{w} frame, "
                             f"got {args.pad}")
        h, w = h - top - bottom, w - left - right
    if task.source in (None, "clip"):
        return None, None
    indices = None
    if task.source == "keyframes":
        source, indices = _keyframes(args.keyframe, h, w)
    elif task.source == "video" and args.video:
        source = _read("--video", load_video, args.video, t, h, w)
    else:  # a still, or (video tasks) the image held for every frame
        source = _read("--image", load_image, args.image, h, w)[:, :, None]
        source = source.expand(-1, -1, t, -1, -1) if task.source == "video" else source
    mask = _read("--mask", load_mask, args.mask, h, w) if "mask" in task.needs else None
    pad = tuple(args.pad) if "pad" in task.needs else None
    try:
        return conditioning.build(mode, source, t, mask=mask, pad=pad, indices=indices)
    except ValueError as e:  # e.g. "indices: expected 2 distinct frame numbers ..."
        raise flag_error(e) from None


def _keyframes(specs: list[str], h: int, w: int) -> tuple[torch.Tensor, list[int]]:
    """--keyframe FRAME=PNG flags -> the images (1, 3, k, h, w) and their frame numbers."""
    from .media import load_image

    indices, images = [], []
    for spec in specs:
        frame, sep, path = spec.partition("=")
        try:
            index = int(frame) if sep and path else None
        except ValueError:
            index = None
        if index is None:
            raise InputError(f"--keyframe: expected FRAME=PNG (e.g. 0=first.png), got {spec!r}")
        indices.append(index)
        images.append(_read("--keyframe", load_image, path, h, w))
    return torch.stack(images, dim=2), indices


def check_generate_memory(cfg, device, precision: str, t: int, h: int, w: int, windowed: bool, ssr,
                          window: int | None) -> None:
    """Refuse, before any sampling, a run whose estimated memory (`lumiere.memory`, the estimate the ComfyUI nodes
    use) exceeds what the device has available. `window`: the SSR's frames per window (with `ssr`)."""
    from .compute import PRECISIONS
    from .memory import available_bytes, format_bytes, sampling_memory_estimate

    free = available_bytes(device)
    if free is None:
        return
    dtype = PRECISIONS[precision]
    try:
        need = sampling_memory_estimate(cfg, (1, 3, min(t, cfg.num_frames) if windowed else t, h, w), dtype=dtype,
                                        latent_frames=t)
        if ssr is not None:
            s = ssr.config
            need = max(need, sampling_memory_estimate(s, (1, 3, min(t, window), h * s.scale,
                                                          w * s.scale), cfg_batch=1, dtype=dtype, latent_frames=t))
    except ValueError as e:  # a shape the network cannot take: named by the network's own check later
        if as_input_error(e) is None:
            raise
        return
    if need > free:
        raise InputError(f"--frames/--height/--width: expected a video whose sampling fits the {format_bytes(free)} "
                         f"available on {device}, got {t} frames of {h}x{w} needing about {format_bytes(need)}; "
                         f"fewer frames or a smaller size")


def generate_command(args) -> int:
    from .compute import prepare_for_inference, resolve_device, set_threads
    from .media import check_output_path, load_video, save_video
    from .pipeline import check_schedule, generate, generate_extended, generate_long, parse_prompt_schedule, upscale
    from .stylize import stylize, t2i_state_dict

    mode = args.mode or ("image_to_video" if args.image else "text")
    sdedit = args.video is not None and mode == "text"
    if args.strength is not None and not sdedit:
        raise InputError("--strength: SDEdit needs --video (in text mode)")
    if (args.window is not None or args.tile is not None) and not args.ssr:
        raise InputError("--window/--tile: only used with --ssr")
    for name in POSITIVE:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected a positive whole number, got {value} "
                             f"(leave the flag out for the default)")
    _read("--out", check_output_path, args.out)
    media_check(args.out)
    check_default_model(args.model)
    try:
        set_threads(args.threads)
        device = resolve_device(args.device)
    except ValueError as e:  # "threads: expected ...", "device: ..."
        raise flag_error(e) from None
    # every input is read and checked before the (long) sampling starts
    bundle = _load("--model", args.model)
    cfg = bundle.config
    if cfg.role == "ssr":
        raise InputError(f"--model: {args.model} is an SSR model; pass it with --ssr and a base model with --model")
    ssr = _load("--ssr", args.ssr) if args.ssr else None
    if ssr is not None and ssr.config.role != "ssr":
        raise InputError(f"--ssr: {args.ssr} is not an SSR model (role {ssr.config.role!r})")
    if args.style:
        style = _load("--style", args.style)
        try:
            stylize(bundle.model, t2i_state_dict(style.model), args.alpha)
        except (KeyError, ValueError) as e:
            if str(e.args[0]).startswith("alpha:"):
                raise InputError(f"--{e.args[0]}") from None
            raise InputError(f"--style: {args.style}: {e.args[0]}") from None
    for b in (bundle, ssr):
        if b is not None:  # the library follows the model's device and dtype
            prepare_for_inference(b.model.to(device), args.precision)
    t, h, w = args.frames or cfg.num_frames, args.height or cfg.resolution, args.width or cfg.resolution
    try:
        schedule = parse_prompt_schedule(args.prompt)
    except ValueError as e:
        raise flag_error(e) from None
    windowed = args.loop or t > cfg.num_frames or len(schedule) > 1
    try:
        if windowed:
            check_schedule(schedule, t)
    except ValueError as e:
        raise flag_error(e) from None
    ssr_window = ssr_overlap = None
    if ssr is not None:  # the SSR's windows over the base's t frames
        try:
            ssr_window, ssr_overlap = resolve_window(t, args.window, args.overlap, ssr.config.num_frames)
        except ValueError as e:
            raise flag_error(e) from None
    warn_prompt(bundle, "--prompt", schedule)
    warn_prompt(bundle, "--negative", [(0, args.negative)])
    check_generate_memory(cfg, device, args.precision, t, h, w, windowed, ssr, ssr_window)
    C, M = _conditioning(args, mode, t, h, w)
    init = _read("--video", load_video, args.video, t, h, w) if sdedit else None
    if windowed and sdedit:
        raise InputError("--video: SDEdit (text mode with --video) runs one window; drop --loop / the schedule, "
                         "or keep --frames within the model's")
    sampling = dict(steps=args.steps, cfg=args.cfg, sampler=args.sampler, scheduler=args.scheduler,
                    negative=args.negative)
    try:
        if mode == "extend":
            clip = _read("--video", load_video, args.video, t - 1, h, w, 1)
            video = generate_extended(bundle, args.prompt, t, clip=clip, context=args.context, seed=args.seed,
                                      replace_known=args.replace_known, **sampling)
        elif windowed:
            video = generate_long(bundle, args.prompt, t, height=h, width=w, seed=args.seed, C=C, M=M,
                                  replace_known=args.replace_known and C is not None, loop=args.loop,
                                  disable=args.quiet, **sampling)
        else:
            video = generate(bundle, args.prompt, num_frames=t, height=h, width=w, seed=args.seed, C=C, M=M,
                             init_video=init, strength=0.6 if args.strength is None else args.strength,
                             replace_known=args.replace_known and C is not None, disable=args.quiet, **sampling)
    except ValueError as e:  # e.g. "context: expected ..."
        raise flag_error(e) from None
    if ssr is not None:
        video = upscale(ssr, video, args.prompt, window=ssr_window, overlap=ssr_overlap, fuse=args.fuse,
                        tile=args.tile, steps=args.ssr_steps, cfg=args.ssr_cfg, seed=args.seed,
                        sampler=args.sampler, scheduler=args.scheduler, negative=args.negative, disable=args.quiet)
    print(_read("--out", save_video, video[0], args.out, cfg.fps))
    return 0


# ---------------------------------------------------------------- inspect


def add_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a Lumiere .safetensors checkpoint")
    p.set_defaults(func=inspect_command)


def inspect_command(args) -> int:
    """Print the config and parameter counts, read from the header only (no tensor is loaded)."""
    from .checkpoint import read_header

    try:
        header, config = read_header(args.file)
    except ValueError as e:
        raise InputError(f"FILE: {e}") from None
    counts = {"t2i": 0, "temporal": 0, "text_encoder": 0}
    for key, info in header.items():
        n = 1
        for d in info["shape"]:
            n *= d
        if key.startswith("text_encoder."):
            counts["text_encoder"] += n
        elif key.startswith("net.unet.") or (key.startswith("net.") and config.temporal is None):
            counts["t2i"] += n
        else:
            counts["temporal"] += n
    counts["total"] = sum(counts.values())
    dtypes = sorted({info["dtype"] for info in header.values()})
    print(json.dumps({"file": str(args.file), "config": config.to_dict(), "parameters": counts, "dtypes": dtypes},
                     indent=2))
    return 0


# ---------------------------------------------------------------- train / eval (other modules' commands)


def _setup_train(p: argparse.ArgumentParser) -> None:
    from .train import add_train_args, train_command

    add_train_args(p)
    p.set_defaults(func=train_command)


def _setup_eval(p: argparse.ArgumentParser) -> None:
    from .eval import add_eval_args, eval_command

    add_eval_args(p)
    p.set_defaults(func=eval_command)


# ---------------------------------------------------------------- entry point


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lumiere", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_generate_args(sub.add_parser("generate", help="text (+ image/mask/video) to video"))
    add_inspect_args(sub.add_parser("inspect", help="print a checkpoint's config and parameter counts"))
    bench = sub.add_parser("bench", help="STUNet vs a full-frame-rate inflation: time and memory")
    from .bench import add_bench_args

    add_bench_args(bench)
    command = next((a for a in argv if not a.startswith("-")), None)
    for name, helptext, setup in (("train", "train a stage (see configs/)", _setup_train),
                                  ("eval", "evaluate checkpoints", _setup_eval)):
        p = sub.add_parser(name, help=helptext)
        if command == name:  # import the command's module only when it is the one run (training pulls in data)
            setup(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.parse_args([args.command, "--help"])
    keep_freed_memory()  # this process is ours: reuse freed memory instead of page-faulting it in (lumiere.compute)
    try:
        code = args.func(args)
    except (InputError, CheckpointError) as e:  # the project's own errors; anything else is a bug: traceback
        print(f"lumiere {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)
