"""Memory, in one home: estimated before anything is allocated, and measured.

- `sampling_memory_estimate(config, shape)` runs one forward pass of the model on the meta device (no memory, no
  arithmetic; attention counted as the fused kernels hold it) and follows every tensor the pass creates: its bytes
  count from the op that makes it until Python drops it (views share their base's storage and count once). The
  high-water mark of those live bytes is the activation peak of a step; the sampler's own copies of the latent (the
  current sample, the noise, the denoised estimate, the conditioning) come on top. The ComfyUI nodes refuse a video
  whose estimate exceeds the memory the device has free, with an error naming the input and what to do
  (`nodes.comfy_model.check_memory`). On the tiny and demo presets it is within 2 % of the peak measured on CPU (a
  test keeps it within 35 %).
- `training_memory_estimate(preset, ...)`: one bf16 training step of a STUNet at full size, on the meta device,
  through the model's public seam for its blocks (`STUNet.block_runner`).
- `peak_bytes(fn, device)`: the measurement -- the high-water mark of the tensor bytes `fn` allocates, from CUDA's
  allocator statistics on a CUDA device, else from torch.profiler's allocator events.
"""
from __future__ import annotations

import json
import os
import sys
import weakref
from contextlib import contextmanager
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .checkpoint import build_model
from .compute import prepare_for_inference
from .configs import ModelConfig, get_preset

# latent-sized fp32 tensors the hungriest sampler (dpmpp_2m: x, noise, x0, its previous x0 and the step's temporaries)
# holds at its peak besides the network's activations; tests/test_memory.py measures every sampler against it
SAMPLER_COPIES = 9


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


def training_memory_estimate(preset: str = "paper", frames: int | None = None, resolution: int | None = None,
                             batch: int = 1) -> dict:
    """Estimated memory of one bf16 training step of a STUNet at full size, computed on the meta device (nothing is
    allocated, so the paper preset at 80 frames of 128 x 128 is fine on a laptop).

    Activations = the bytes autograd saves for the backward pass (saved-tensor hooks; a tensor and its views
    counted once), attributed to the block that saves them through `STUNet.block_runner`. With activation
    checkpointing per block (`STUNet.activation_checkpointing`) a block keeps only its inputs, and the backward
    recomputes one block at a time: the outside-block activations + every block's input + the largest block's
    activations. Weights: the trainable ones fp32 + grads + AdamW's two moments, frozen (T2I) ones bf16. Allocator
    overhead and workspace are not counted."""
    cfg = get_preset(preset)
    t, r = frames or cfg.num_frames, resolution or cfg.resolution
    with torch.device("meta"):
        model = build_model(cfg)
    model.check_num_frames(t)
    trainable = sum(p.numel() for p in model.temporal_parameters())
    frozen = sum(p.numel() for p in model.parameters()) - trainable
    model = model.to(torch.bfloat16)
    blocks: list[dict] = []
    outside = {"bytes": 0, "seen": set()}
    current = [outside]

    def run_block(fn, *args):  # attribute what each block saves to it, and note its inputs
        block = {"bytes": 0, "seen": set(), "inputs": sum(a.nbytes for a in args if torch.is_tensor(a))}
        blocks.append(block)
        current.append(block)
        try:
            return fn(*args)
        finally:
            current.pop()

    def pack(x):
        owner, base = current[-1], (x._base if x._base is not None else x)
        if id(base) not in owner["seen"]:
            owner["seen"].add(id(base))
            owner["bytes"] += base.nbytes
        return x

    model.block_runner = run_block
    x = torch.empty(batch, cfg.unet.in_channels, t, r, r, device="meta", dtype=torch.bfloat16)
    ctx = torch.empty(batch, cfg.text.max_tokens, cfg.unet.context_dim, device="meta", dtype=torch.bfloat16)
    for p in model.unet.parameters():
        p.requires_grad_(False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model(x, torch.empty(batch, device="meta"), ctx)
    gib = 2 ** 30
    without = outside["bytes"] + sum(b["bytes"] for b in blocks)
    with_ckpt = outside["bytes"] + sum(b["inputs"] for b in blocks) + max(b["bytes"] for b in blocks)
    weights = trainable * (4 + 4 + 8) + frozen * 2
    return {"preset": preset, "frames": t, "resolution": r, "batch": batch, "blocks": len(blocks),
            "trainable_params": trainable, "frozen_params": frozen,
            "weights_grads_optimizer_gib": round(weights / gib, 3),
            "activations_gib": round(without / gib, 3),
            "activations_checkpointed_gib": round(with_ckpt / gib, 3),
            "total_gib": round((weights + without) / gib, 3),
            "total_checkpointed_gib": round((weights + with_ckpt) / gib, 3)}


def peak_bytes(fn, device: torch.device | str = "cpu") -> int:
    """High-water mark of the tensor bytes allocated (net of frees) while `fn` runs on `device`: CUDA's allocator
    statistics on a CUDA device (above what was allocated before), else torch.profiler's allocator events."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    return max(accumulate(n for _, n in mem), default=0)


@contextmanager
def _quiet_stderr():
    """Silence the profiler backend's start/stop lines, which it writes straight to file descriptor 2."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def format_bytes(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"
