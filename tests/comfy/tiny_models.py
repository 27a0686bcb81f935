"""Random-weight `tiny` checkpoints for plumbing tests (base, SSR, style), written with the library's save_model."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import torch

from lumiere import build_bundle, get_preset, save_model
from lumiere.configs import TextConfig
from lumiere.data.procedural import VOCAB

TINY = {"base": "tiny_base.safetensors", "ssr": "tiny_ssr.safetensors", "style": "tiny_style.safetensors",
        "external": "tiny_external.safetensors"}
CLIP_L_WIDTH, CLIP_L_TOKENS = 768, 77
RANDOM_CLIP_L = "lumiere_test_random_clip_l.safetensors"


def tiny_configs() -> dict:
    base = get_preset("tiny")
    base.text.vocab = VOCAB
    base.role = "base"
    ssr = copy.deepcopy(base)
    ssr.role, ssr.conditioning, ssr.scale = "ssr", "lowres", 2
    ssr.unet.in_channels = 6
    style = copy.deepcopy(base)
    style.role, style.temporal = "style", None  # a T2I U-Net with the base model's T2I architecture
    external = copy.deepcopy(base)  # takes a core CLIP-L's conditioning (the external-text route)
    external.text = TextConfig(kind="external", width=CLIP_L_WIDTH, max_tokens=CLIP_L_TOKENS)
    external.unet.context_dim = CLIP_L_WIDTH
    return {"base": base, "ssr": ssr, "style": style, "external": external}


def make_tiny_models(folder: str | Path, seed: int = 0) -> dict[str, str]:
    """Write the three checkpoints into `folder` (skipped if present); returns role -> file name."""
    folder = Path(folder)
    for i, (role, cfg) in enumerate(tiny_configs().items()):
        path = folder / TINY[role]
        if not path.exists():
            torch.manual_seed(seed + i)
            bundle = build_bundle(cfg)
            with torch.no_grad():  # zero-initialized branches would make the temporal layers exact no-ops
                for p in bundle.model.parameters():
                    if p.abs().sum() == 0 and p.ndim > 1:
                        p.normal_(0, 0.02)
            save_model(path, bundle)
    return dict(TINY)


_CLIP_L_SCRIPT = """
import sys, torch
from safetensors.torch import save_file
from comfy.cli_args import args
args.cpu = True
import comfy.sd1_clip
model = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
g = torch.Generator().manual_seed(0)
sd = {}
for key, v in model.transformer.state_dict().items():
    if "norm" in key:
        sd[key] = (torch.ones if key.endswith("weight") else torch.zeros)(v.shape, dtype=torch.float16)
    else:
        sd[key] = (torch.randn(v.shape, generator=g) * 0.02).half()
save_file(sd, sys.argv[1])
"""


def write_random_clip_l(folder: str | Path, comfy_dir: str | Path) -> Path:
    """A CLIP-L text encoder (the SD1 one core's Load CLIP detects) with seeded random weights, saved as fp16 into
    `folder` (skipped if present). Built by ComfyUI's own class, in a subprocess (so this process's ComfyUI
    import order is untouched)."""
    path = Path(folder) / RANDOM_CLIP_L
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", _CLIP_L_SCRIPT, str(path)], cwd=str(comfy_dir), check=True)
    return path
