"""Self-describing safetensors checkpoints: weights + the model config as JSON metadata. Never unpickles.

Keys: `net.` (the STUNet or the T2I U-Net; inside a STUNet the T2I weights are `net.unet.`) and
`text_encoder.` (the built-in text encoder, when the model has one).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .configs import ModelConfig
from .models.stunet import inflate
from .models.ops import TORCH_OPS, Ops
from .models.text import TextEncoder
from .models.unet2d import UNet2D

CONFIG_KEY = "lumiere_config"
FORMAT_KEY = "format"
# the checkpoint layout's version (keys, metadata); files without it are version 1. Readers refuse newer files
VERSION_KEY, FORMAT_VERSION = "lumiere_format_version", 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file (and the key)."""


@dataclass
class LumiereBundle:
    """What a checkpoint holds: the denoising network, its text encoder and its config."""

    model: nn.Module  # STUNet (base, ssr) or UNet2D (t2i, style)
    text_encoder: TextEncoder | None
    config: ModelConfig


def build_model(config: ModelConfig, ops: Ops = TORCH_OPS) -> nn.Module:
    """The config's network (STUNet or UNet2D) built from the layer classes `ops` (torch.nn by default)."""
    unet = UNet2D(config.unet, ops)
    return unet if config.temporal is None else inflate(unet, config.temporal)


def build_bundle(config: ModelConfig) -> LumiereBundle:
    te = TextEncoder(config.text) if config.text.kind == "builtin" else None
    return LumiereBundle(build_model(config), te, config)


def bundle_state_dict(bundle: LumiereBundle) -> dict[str, torch.Tensor]:
    sd = {f"net.{k}": v for k, v in bundle.model.state_dict().items()}
    if bundle.text_encoder is not None:
        sd.update({f"text_encoder.{k}": v for k, v in bundle.text_encoder.state_dict().items()})
    return sd


def save_model(path: str | os.PathLike, bundle: LumiereBundle, dtype: torch.dtype | None = None) -> Path:
    """Write atomically: a temp file in the same folder, then rename (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
          for k, v in bundle_state_dict(bundle).items()}
    meta = {CONFIG_KEY: json.dumps(bundle.config.to_dict()), FORMAT_KEY: "pt", VERSION_KEY: str(FORMAT_VERSION)}
    atomic_save_tensors(path, sd, meta)
    return path


def atomic_write(path: str | os.PathLike, write) -> None:
    """The one way files are written: `write(tmp)` fills a temp file in the same folder, which is fsynced, given
    the permissions of any file the user creates (mkstemp makes it private) and renamed over `path`. A crash
    never leaves half a file, and the temp file never stays behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_header(path: str | os.PathLike) -> tuple[dict, ModelConfig]:
    """Validate the safetensors framing (header, sizes) and return (tensor table, config) without loading."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: not a safetensors file, or truncated (header of {n} bytes, "
                                  f"file of {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a table)")
    meta = header.pop("__metadata__", {}) or {}
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated: the tensors need {8 + n + end} bytes, the file has {size}")
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: not a Lumiere checkpoint (no '{CONFIG_KEY}' metadata)")
    version = meta.get(VERSION_KEY, "1")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written in checkpoint format version {version}, this ComfyUI-Lumiere reads "
                              f"up to version {FORMAT_VERSION}: update the pack")
    try:
        config = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable '{CONFIG_KEY}' metadata: {e}") from None
    return header, config


def read_config(path: str | os.PathLike) -> ModelConfig:
    return read_header(path)[1]


def load_state_into(path, module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Strict load with errors that name the file and the key."""
    own = module.state_dict()
    given = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    if missing:
        raise CheckpointError(f"{path}: missing key '{prefix}{missing[0]}'" +
                              (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key '{prefix}{unexpected[0]}'" +
                              (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for k, v in given.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{path}: key '{prefix}{k}' has shape {tuple(v.shape)}, the config expects "
                                  f"{tuple(own[k].shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in given.items()})


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """The raw tensors and config of a checkpoint (validated framing)."""
    _, config = read_header(path)
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: could not read tensors: {e}") from None
    return state, config


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LumiereBundle:
    """Rebuild the model described by the file's metadata and load its weights (eval mode, fp32)."""
    state, config = load_state(path)
    bundle = build_bundle(config)
    unknown = sorted(k for k in state if not k.startswith(("net.", "text_encoder.")))
    if unknown:
        raise CheckpointError(f"{path}: unexpected key '{unknown[0]}'")
    load_state_into(path, bundle.model, state, "net.")
    if bundle.text_encoder is not None:
        load_state_into(path, bundle.text_encoder, state, "text_encoder.")
    bundle.model.to(device).eval().requires_grad_(False)
    if bundle.text_encoder is not None:
        bundle.text_encoder.to(device).eval().requires_grad_(False)
    return bundle
