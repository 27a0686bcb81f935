"""How much memory sampling a video will take, estimated before anything is allocated.

`sampling_memory_estimate(config, shape)` runs one forward pass of the model on the meta device (no memory, no
arithmetic; attention counted as the fused kernels hold it) and follows every tensor the pass creates: its bytes
count from the op that makes it until Python drops it (views share their base's storage and count once). The high-water mark of those live bytes is the
activation peak of a step; the sampler's own copies of the latent (the current sample, the noise, the denoised
estimate, the conditioning) come on top. The ComfyUI nodes refuse a video whose estimate exceeds the memory the
device has free, with an error naming the input and what to do (`nodes.comfy_model.check_memory`).

On the tiny and demo presets the estimate is within 2 % of the peak measured on CPU (a test keeps it within 35 %).
"""
from __future__ import annotations

import json
import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .configs import ModelConfig

SAMPLER_COPIES = 6  # latent-sized tensors a sampler keeps besides the network's activations (x, noise, x0, C, M, old)


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the mode and still referenced (per storage, views once)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._storages: dict[int, list] = {}  # storage id -> [bytes, tensors alive]
        self._tensors: set[int] = set()

    def _release(self, tid: int, sid: int) -> None:
        self._tensors.discard(tid)
        entry = self._storages[sid]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[sid]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or id(t) in self._tensors:
                continue  # an in-place op's result is a tensor already counted
            storage = t.untyped_storage()
            sid = storage._cdata
            if sid not in self._storages:
                self._storages[sid] = [storage.nbytes(), 0]
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self._storages[sid][1] += 1
            self._tensors.add(id(t))
            weakref.finalize(t, self._release, id(t), sid)
        return out


class FusedAttention(TorchFunctionMode):
    """SDPA as the fused kernels run it on a real device: the output only (on the meta device it would fall back
    to the math path and count an l x m score matrix the real kernels never hold)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2]
            return q.new_empty(*q.shape[:-1], v.shape[-1])
        return func(*args, **(kwargs or {}))


def forward_peak_bytes(config: ModelConfig, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                       context_tokens: int | None = None) -> int:
    """Peak live activation bytes of one no-grad forward of the config's network on a (b, c_in, t, h, w) input.
    Remembered per (config, shape, dtype, tokens): a sampler node run again on the same video asks again."""
    key = (json.dumps(config.to_dict(), sort_keys=True, default=str), tuple(shape), str(dtype), context_tokens)
    if key not in _FORWARD_PEAKS:
        _FORWARD_PEAKS[key] = _forward_peak_bytes(config, tuple(shape), dtype, context_tokens)
    return _FORWARD_PEAKS[key]


_FORWARD_PEAKS: dict[tuple, int] = {}


def _forward_peak_bytes(config: ModelConfig, shape: tuple[int, ...], dtype: torch.dtype,
                        context_tokens: int | None) -> int:
    from .checkpoint import build_model
    from .compute import prepare_for_inference
    with torch.device("meta"):
        net = prepare_for_inference(build_model(config))  # the layout the library and the nodes run in
    net = net.to(dtype)
    b, c, t, h, w = shape
    if config.temporal is None:  # a T2I network sees the frames folded into the batch (pipeline.FramewiseT2I)
        b, t = b * t, None
    tokens = context_tokens or config.text.max_tokens
    x = torch.empty(b, config.unet.in_channels, *(() if t is None else (t,)), h, w, device="meta", dtype=dtype)
    ts = torch.empty(b, device="meta", dtype=dtype)
    ctx = torch.empty(b, tokens, config.unet.context_dim, device="meta", dtype=dtype)
    tracker = LiveBytes()
    with torch.no_grad(), FusedAttention(), tracker:
        net(x, ts, ctx)
    return tracker.peak


def sampling_memory_estimate(config: ModelConfig, shape: tuple[int, ...], cfg_batch: int = 2,
                             dtype: torch.dtype = torch.float32, latent_frames: int | None = None) -> int:
    """Bytes to sample a video latent of `shape` (b, 3, t, h, w): one step's activations at batch b x cfg_batch
    (classifier-free guidance runs the prompt and the negative together) plus the sampler's fp32 copies of the
    latent (`latent_frames` long when the network sees windows of t frames). A T2I network (role t2i / style)
    takes the frames as a batch."""
    b, c, t, h, w = shape
    return forward_peak_bytes(config, (b * cfg_batch, c, t, h, w), dtype) + \
        sampler_copies_bytes((b, c, latent_frames or t, h, w))


def sampler_copies_bytes(shape: tuple[int, ...], extra_channels: int = 0) -> int:
    """The sampler's SAMPLER_COPIES fp32 copies of a latent (b, c, t, h, w), plus `extra_channels` more fp32
    values per pixel and frame (what a node makes besides)."""
    b, c, t, h, w = shape
    return (SAMPLER_COPIES * c + extra_channels) * b * t * h * w * 4


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation on `device`: the kernel's MemAvailable for the CPU (Linux), the driver's
    free memory for CUDA; None where it cannot be read (the caller then does not refuse anything)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def format_bytes(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"
