"""The caption-embedding step of external-text models: every caption of a folder dataset (the `.txt` beside each
video), and the empty caption, encoded once by a core ComfyUI text encoder into
`DATA/caption_embeddings.safetensors` (`lumiere.data.embeddings`), which the trainer reads.

    python scripts/embed_captions.py DATA --text-encoder FILE [--type stable_diffusion] [--comfy DIR] [--cpu]

Train / run parity is the point, so the encoder is loaded by ComfyUI's own loader (`comfy.sd.load_clip`, what the
core Load CLIP node calls, with its `type`) and each caption goes through CLIP Text Encode's two calls
(`clip.tokenize`, `clip.encode_from_tokens_scheduled`): the same tokenizer, length and padding as the user's graph.
ComfyUI is imported here only (the library never imports it), from `--comfy` (a ComfyUI folder) or the
environment.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after ComfyUI's folder: the repo's `nodes/` package must not shadow ComfyUI's `nodes`

from lumiere.data.embeddings import EMBEDDINGS_FILE, embed_folder  # noqa: E402


def import_comfy(comfy_dir: str | Path | None = None, cpu: bool = False):
    """ComfyUI's `comfy.sd`, from `comfy_dir` (first on sys.path) or the environment."""
    if comfy_dir:
        comfy_dir = Path(comfy_dir)
        if not (comfy_dir / "comfy" / "sd.py").is_file():
            raise SystemExit(f"--comfy: expected a ComfyUI folder (with comfy/sd.py), got {str(comfy_dir)!r}")
        sys.path.insert(0, str(comfy_dir))
    try:
        from comfy.cli_args import args
        if cpu:
            args.cpu = True  # as `main.py --cpu`; before comfy.model_management is first imported
        import comfy.sd
    except ImportError as e:
        raise SystemExit(f"--comfy: expected ComfyUI importable (pass its folder), got {e}") from e
    return comfy.sd


def load_text_encoder(path: str | Path, clip_type: str = "stable_diffusion", comfy_dir=None, cpu: bool = False):
    """A core CLIP object, loaded as the Load CLIP node loads `path` with `type`."""
    sd = import_comfy(comfy_dir, cpu)
    types = {t.name.lower(): t for t in sd.CLIPType}
    if clip_type not in types:
        raise SystemExit(f"--type: expected one of {sorted(types)}, got {clip_type!r}")
    if not Path(path).is_file():
        raise SystemExit(f"--text-encoder: expected a text-encoder file, got {str(path)!r} (no such file)")
    return sd.load_clip(ckpt_paths=[str(path)], clip_type=types[clip_type])


def comfy_encoder(clip) -> Callable[[str], torch.Tensor]:
    """text -> (tokens, width): what CLIP Text Encode puts in its CONDITIONING for `text`."""
    def encode(text: str) -> torch.Tensor:
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0][0]
    return encode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="the folder of videos with a .txt caption beside each")
    p.add_argument("--text-encoder", required=True, help="a text-encoder file the core Load CLIP node loads")
    p.add_argument("--type", default="stable_diffusion", help="Load CLIP's type (default: stable_diffusion)")
    p.add_argument("--comfy", default=None, help="a ComfyUI folder to import it from (default: the environment)")
    p.add_argument("--cpu", action="store_true", help="encode on the CPU")
    p.add_argument("--out", default=None, help=f"the file to write (default: DATA/{EMBEDDINGS_FILE})")
    args = p.parse_args(argv)
    from tqdm import tqdm
    clip = load_text_encoder(args.text_encoder, args.type, args.comfy, args.cpu)
    try:
        with torch.no_grad():
            path = embed_folder(args.data, comfy_encoder(clip), f"{Path(args.text_encoder).name} ({args.type})",
                                args.out, progress=lambda xs: tqdm(xs, desc="captions"))
    except ValueError as e:  # the library's errors name their input
        raise SystemExit(str(e)) from e
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
