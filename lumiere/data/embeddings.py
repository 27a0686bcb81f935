"""Caption embeddings of an external text encoder, computed once and stored beside a dataset (safetensors).

A model with `text.kind = "external"` has no text encoder of its own: it is trained on the embeddings a real
encoder (CLIP, T5, ...) gives each caption, and in ComfyUI it takes the conditioning of a core text-encoder loader
and CLIP Text Encode. `scripts/embed_captions.py` writes the file with ComfyUI's own loader and the exact calls
CLIP Text Encode makes, so a caption's training embedding is what the user's graph gives for the
same text. The empty caption is always stored: it is the unconditional context (caption dropout in training, the
negative prompt "" in ComfyUI).

File: one tensor per distinct caption, `(tokens, width)`, keyed by a hash of the caption text (stripped); the
metadata holds the encoder, its width and token count, and the caption of each key.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable

import torch

EMBEDDINGS_FILE = "caption_embeddings.safetensors"


def caption_key(text: str) -> str:
    return "caption." + hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:20]


def write_caption_embeddings(path: str | Path, captions: Iterable[str], encode: Callable[[str], torch.Tensor],
                             encoder: str, progress: Callable[[Iterable], Iterable] = iter) -> Path:
    """Encode every distinct caption (and the empty one) once with `encode(text) -> (tokens, width)`; write the
    file atomically. Returns its path."""
    from safetensors.torch import save

    from ..checkpoint import atomic_write_bytes
    texts = sorted({c.strip() for c in captions} | {""})
    tensors, names = {}, {}
    for text in progress(texts):
        emb = encode(text)
        if emb.ndim != 2:
            raise ValueError(f"text encoder: expected (tokens, width) embeddings, got shape {tuple(emb.shape)}")
        key = caption_key(text)
        tensors[key], names[key] = emb.detach().float().cpu().contiguous(), text
    shapes = {tuple(t.shape) for t in tensors.values()}
    width = {s[1] for s in shapes}
    if len(width) != 1:
        raise ValueError(f"text encoder: expected one embedding width, got {sorted(width)}")
    meta = {"encoder": encoder, "width": str(width.pop()), "tokens": json.dumps(sorted({s[0] for s in shapes})),
            "captions": json.dumps(names)}
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


class CaptionEmbeddings:
    """The stored embeddings: `embeddings(captions) -> (b, tokens, width)` (shorter ones zero-padded)."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"data.embeddings: expected the caption embeddings file written by "
                             f"scripts/embed_captions.py, got {str(self.path)!r} (no such file)")
        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
            self.tensors = {k: f.get_tensor(k) for k in f.keys()}
        self.encoder = meta.get("encoder", "")
        self.width = int(meta.get("width", 0))
        self.captions = json.loads(meta.get("captions", "{}"))
        if caption_key("") not in self.tensors:
            raise ValueError(f"data.embeddings: expected an empty-caption embedding in {self.path}, got none "
                             f"(re-run scripts/embed_captions.py)")
        self.tokens = max(t.shape[0] for t in self.tensors.values())

    def __len__(self) -> int:
        return len(self.tensors)

    def __call__(self, captions: list[str]) -> torch.Tensor:
        out = torch.zeros(len(captions), self.tokens, self.width)
        for i, text in enumerate(captions):
            emb = self.tensors.get(caption_key(text))
            if emb is None:
                raise ValueError(f"caption: expected one embedded in {self.path}, got {text.strip()!r} (re-run "
                                 f"scripts/embed_captions.py after changing the captions)")
            out[i, : emb.shape[0]] = emb
        return out


def folder_captions(root: str | Path) -> list[str]:
    """The caption of every video of a folder dataset (`lumiere.data.folder`), in its order."""
    from .folder import FolderDataset
    data = FolderDataset(root, cache=False)
    return [data.caption(i) for i in range(len(data))]


def embed_folder(root: str | Path, encode: Callable[[str], torch.Tensor], encoder: str,
                 out: str | Path | None = None, progress=iter) -> Path:
    """Write the caption embeddings of the folder dataset `root` (default: `root/caption_embeddings.safetensors`)."""
    return write_caption_embeddings(out or Path(root) / EMBEDDINGS_FILE, folder_captions(root), encode, encoder,
                                    progress)
