"""Random-weight `tiny` checkpoints for plumbing tests (base, SSR, style), written with the library's save_model."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from lumiere import build_bundle, get_preset, save_model
from lumiere.data.procedural import VOCAB

TINY = {"base": "tiny_base.safetensors", "ssr": "tiny_ssr.safetensors", "style": "tiny_style.safetensors"}


def tiny_configs() -> dict:
    base = get_preset("tiny")
    base.text.vocab = VOCAB
    base.role = "base"
    ssr = copy.deepcopy(base)
    ssr.role, ssr.conditioning, ssr.scale = "ssr", "lowres", 2
    ssr.unet.in_channels = 6
    style = copy.deepcopy(base)
    style.role, style.temporal = "style", None  # a T2I U-Net with the base model's T2I architecture
    return {"base": base, "ssr": ssr, "style": style}


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
