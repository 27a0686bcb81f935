"""How the networks compute: precision, memory layout and CPU threads, one home for the three.

- `precision`: "fp32" (weights and activations in fp32) or "bf16" (weights cast to bf16; inference only --
  training keeps fp32 master weights and uses bf16 autocast instead, see `lumiere.train.trainer`).
- Memory layout: 4-D conv weights and activations in channels_last. oneDNN's convolutions run 1.5-2x faster
  on it than on NCHW on CPU, and the temporal layers then see frames as free views (`lumiere.kernels`).
The networks cast their inputs to their own weights' dtype and return the caller's dtype, so a sampler
working in fp32 can drive a bf16 network unchanged.
- CPU threads: every command that computes takes `--threads` (default: half the cores, at least one). torch's
  own default (all cores) is the slowest choice on a machine that runs anything else: a 10.6 s clip took
  39-124 s with it on a busy 2-core machine.
- CPU memory: glibc gives every allocation above 32 MB (and, after a free, anything left at the top of the heap)
  back to the OS, so a big activation is fresh memory at every step, page-faulted in 4 KB pages on first touch.
  On a VM that costs ~2 us a page: a quarter of the STUNet's 80-frame forward here (`python -m lumiere bench`).
  `keep_freed_memory()` keeps freed memory in the process for the next step (what jemalloc / tcmalloc do for
  PyTorch's CPU performance guide). The project's own processes (the CLI, training, eval) call it; a library
  import never changes a host process's allocator (ComfyUI's: see docs/comfyui.md).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os

import torch
from torch import nn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def precision_dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def to_compute_layout(module: nn.Module) -> nn.Module:
    """channels_last for every 4-D weight (in place); other tensors are untouched. Values do not change."""
    return module.to(memory_format=torch.channels_last)


def prepare_for_inference(module: nn.Module, precision: str = "fp32") -> nn.Module:
    """Cast to the precision's dtype and the compute layout, in eval mode (in place)."""
    return to_compute_layout(module.to(precision_dtype(precision))).eval()


def weight_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def default_threads() -> int:
    """Half the machine's cores, at least one: leaves room for whatever else runs (servers, tests, a UI)."""
    return max(1, (os.cpu_count() or 2) // 2)


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (None or 0: `default_threads()`); returns the number in force."""
    n = int(threads) if threads else default_threads()
    if n < 1:
        raise ValueError(f"threads: expected a positive number of CPU threads, got {threads}")
    torch.set_num_threads(n)
    return n


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Keep freed CPU memory in the process (glibc): serve every allocation from the heap (no per-allocation mmap)
    and never trim the heap. The resident size then stays at the process's high-water mark, which later steps of
    the same shapes reuse without page faults once the heap has settled (a few steps; tested). Returns whether it
    took effect (False off glibc, e.g. macOS, Windows, musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (default: half the cores, here {default_threads()})")


def resolve_device(name: str | None) -> torch.device:
    """"auto" (or None): CUDA if available, else CPU; otherwise a torch device name ("cpu", "cuda", "cuda:1", "mps")
    that this machine has."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: expected cpu, cuda, cuda:N, mps or auto, got {name!r}") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(f"device: {name!r} is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device: {name!r} is not available on this machine ({torch.cuda.device_count()} GPUs)")
    return device


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="where the models run: cpu, cuda, cuda:N, mps, or auto (default: CUDA if available)")
