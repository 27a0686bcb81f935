"""How the networks' building blocks compute: each function states the formula it computes, and its reference
(the formula written plainly, what the tests hold it to) sits beside it.

The rules that pick a kernel from CPU measurements (torch 2.13, one thread; `python -m lumiere bench` re-measures
the network) sit behind a CPU device check: other devices (CUDA, MPS) get torch's own kernel for the formula until
someone measures otherwise. The temporal convolutions are no such rule: they are exact re-indexings of their
formula onto torch's conv2d (fewer copies and, for the x2 up-sampling, 2/3 of the FLOPs), the same on every device.

- `group_norm`, `group_norm_film`: GroupNorm with fp32 statistics, returned in the activations' dtype, and its
  FiLM (scale, shift) after it;
- `attention`: softmax(q k^T / sqrt(d) + bias) v;
- `temporal_conv`, `temporal_upsample`: a k-tap conv along each pixel's frames (replicate padding), strided or
  after frame duplication, on activations whose frames are folded into the batch, `((b t), c, H, W)`.
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from einops import rearrange

# ---------------------------------------------------------------------------------------------------- GroupNorm


def group_norm_reference(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float) -> torch.Tensor:
    """GroupNorm computed in fp32, returned in x's dtype."""
    w, b = (None if a is None else a.float() for a in (weight, bias))
    return F.group_norm(x.float(), groups, w, b, eps).to(x.dtype)


# torch 2.13's CPU GroupNorm on channels_last bf16 activations, measured (one thread, 8-128 images of 32-256
# channels; fp32 copies keep channels_last):
# - without autograd: fastest as it comes for frames of >= 32 x 32 pixels, but 4-7x slower than normalising an
#   fp32 copy for 8 x 8 and 16 x 16 frames (another kernel): smaller frames take the fp32 copy;
# - with autograd (forward + backward): as it comes 2-5x slower than either copy; an fp32 copy is 1.1-1.6x faster
#   than an NCHW copy for >= 32 x 32 frames, an NCHW copy 1.2-1.5x faster for 16 x 16.
HALF_CHANNELS_LAST_GROUP_NORM_MIN_PIXELS = 32 * 32


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float) -> torch.Tensor:
    """GroupNorm with fp32 statistics, returned in x's dtype (`group_norm_reference`; half-precision outputs are
    that computation rounded, tested).

    torch's kernel on the activations as they come: its bf16 / fp16 kernels accumulate the statistics in fp32. On
    the CPU, channels_last half-precision activations are normalised as they come, as an fp32 copy or as an NCHW
    copy, whichever measured fastest for their frame size with and without autograd (above)."""
    if x.device.type != "cpu":
        return F.group_norm(x, groups, *(None if a is None else a.to(x.dtype) for a in (weight, bias)), eps)
    return _cpu_group_norm(x, groups, weight, bias, eps)


def _cpu_group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    recorded = torch.is_grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad))
    if x.dtype in (torch.bfloat16, torch.float16):
        w, b = (None if a is None else a.to(x.dtype) for a in (weight, bias))
        large = x.shape[-2] * x.shape[-1] >= HALF_CHANNELS_LAST_GROUP_NORM_MIN_PIXELS
        if not channels_last or (large and not recorded):
            return F.group_norm(x, groups, w, b, eps)
        if recorded and not (large and x.requires_grad):  # NCHW copies (also the frozen-input crash below)
            y = F.group_norm(x.contiguous(), groups, w, b, eps)
            return y.contiguous(memory_format=torch.channels_last)
        w, b = (None if a is None else a.float() for a in (weight, bias))
        return F.group_norm(x.float(), groups, w, b, eps).to(x.dtype)
    w, b = (None if a is None else a.float() for a in (weight, bias))
    if channels_last and recorded and not x.requires_grad:
        # torch 2.13 CPU: the channels_last backward for the weights alone (a frozen input, e.g. the first
        # trained layer after the frozen T2I) crashes the process; NCHW here is exact and only costs a copy
        y = F.group_norm(x.float().contiguous(), groups, w, b, eps)
        return y.to(x.dtype).contiguous(memory_format=torch.channels_last)
    return F.group_norm(x.float(), groups, w, b, eps).to(x.dtype)


def group_norm_film_reference(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                              scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """GroupNorm (fp32 statistics) of x, times (1 + scale), plus shift, computed in fp32 and returned in x's dtype."""
    y = group_norm_reference(x.float(), groups, weight, bias, eps)
    return (y * (1 + scale.float()) + shift.float()).to(x.dtype)


def group_norm_film(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                    scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """group_norm(x) * (1 + scale) + shift (FiLM), scale and shift (n, c, 1, 1) or broadcastable to them
    (`group_norm_film_reference`).

    On the CPU without autograd, the norm's affine and the FiLM are folded into one per-sample weight and bias
    applied in one pass (measured: 1.3x faster in fp32, 2.5x in bf16); with autograd they stay three steps, whose
    backward is faster than the folded form's per-sample reductions."""
    recorded = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, scale, shift))
    if x.device.type != "cpu" or recorded:
        return group_norm(x, groups, weight, bias, eps) * (1 + scale) + shift
    y = group_norm(x, groups, None, None, eps)
    gain = 1 + scale.float()
    w = weight.float()[:, None, None] * gain
    b = bias.float()[:, None, None] * gain + shift.float()
    return torch.addcmul(b.to(y.dtype), y, w.to(y.dtype))


# ---------------------------------------------------------------------------------------------------- attention


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v in fp32, returned in q's dtype.  (n, h, l, d) -> (n, h, l, d)"""
    scores = q.float() @ k.float().transpose(-2, -1) * q.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias.float()
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


# Attention kernels on CPU, measured with torch 2.13 and one thread. fp32: SDPA wins or ties everywhere, on every
# CPU measured. bf16 / fp16, which depends on the CPU:
# - with AMX (Intel Sapphire Rapids and later): with gradients, plain matmul + softmax is 2-8x faster than SDPA's
#   backward up to 256 x 256 tokens; at inference it wins only for very short sequences (<= 16 tokens, 2x);
# - without AMX (AVX-512 BF16, e.g. AMD Zen 5): matmul + softmax is 1.8-2.7x faster than SDPA at every length
#   measured (16 to 5,120 tokens, with and without gradients), so it is taken up to a score matrix of 2048 x 2048
#   per head (8 MiB in bf16), beyond which memory, not speed, decides: SDPA never materialises the l x m scores.
# Other devices: SDPA.
MATMUL_ATTENTION_MAX_SCORES = {"amx": 256 * 256, "other": 2048 * 2048}  # l * m with gradients, bf16/fp16
MATMUL_ATTENTION_MAX_INFERENCE_TOKENS = {"amx": 16, "other": 2048}  # l without gradients (and l * m as above)


@functools.cache
def cpu_kind() -> str:
    """"amx" where the CPU has AMX tiles (torch's oneDNN bf16 kernels use them), else "other"."""
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return "amx" if has_amx is not None and has_amx() else "other"


def use_matmul_attention(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether plain matmul + softmax beats SDPA for these (n, h, l, d) queries and (n, h, m, d) keys: only on the
    CPU, in bf16 / fp16, by the CPU's kind (above)."""
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return False
    l, m = q.shape[-2], k.shape[-2]
    kind = cpu_kind()
    if l * m > MATMUL_ATTENTION_MAX_SCORES[kind]:
        return False
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return True
    return l <= MATMUL_ATTENTION_MAX_INFERENCE_TOKENS[kind]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v (`attention_reference`): torch's SDPA, or that formula in the inputs'
    dtype where `use_matmul_attention` says so.  (n, h, l, d) -> (n, h, l, d)"""
    if not use_matmul_attention(q, k):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ v


# -------------------------------------------------------------------------------------------- temporal convs
# The activations `((b t), c, H, W)` in channels_last memory (`lumiere.compute`) are also a `(b, c, t, H W)` image,
# so a k-tap conv along the frames is a (k, 1) conv2d over that free view: no frame gather, no layout round-trip,
# no tap concatenation, and the temporal layers add no layout copies to the 2-D U-Net's (only the replicate
# padding's frames).


def temporal_conv_reference(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, frames: int,
                            stride: int = 1) -> torch.Tensor:
    """Conv1d along each pixel's frames (padding k // 2, replicate), keeping frames 0, s, 2s, ...
    ((b t), c, H, W) -> ((b t_out), c_out, H, W), t_out = ceil(t / stride); `weight` (c_out, c, k)."""
    H, W = h.shape[-2:]
    x = rearrange(h, "(b t) c H W -> (b H W) c t", t=frames)
    r = weight.shape[-1] // 2
    y = F.conv1d(F.pad(x, (r, r), mode="replicate"), weight, bias, stride=stride)
    return rearrange(y, "(b H W) c t -> (b t) c H W", H=H, W=W)


def temporal_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, frames: int,
                  stride: int = 1) -> torch.Tensor:
    """Conv1d along each pixel's frames (padding k // 2, replicate), keeping frames 0, s, 2s, ...
    (`temporal_conv_reference`). ((b t), c, H, W) -> ((b t_out), c_out, H, W), t_out = ceil(t / stride).

    One (k, 1) conv2d over the (b, c, t, H W) view of the activations (`conv_rows`), free in channels_last memory;
    a channels_last input gives a channels_last output."""
    H, W = h.shape[-2:]
    y = conv_rows(frames_as_rows(h, frames), weight, bias, stride, padding=weight.shape[-1] // 2)
    return rows_as_frames(y, H, W)


def temporal_upsample_reference(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                frames: int) -> torch.Tensor:
    """Every frame twice, then `temporal_conv_reference`.  ((b t), c, H, W) -> ((b 2t), c_out, H, W)"""
    doubled = rearrange(rearrange(h, "(b t) c H W -> b t c H W", t=frames).repeat_interleave(2, dim=1),
                        "b t c H W -> (b t) c H W")
    return temporal_conv_reference(doubled, weight, bias, 2 * frames)


def temporal_upsample(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      frames: int) -> torch.Tensor:
    """Every frame twice, then the conv along each pixel's frames (`temporal_upsample_reference`).
    ((b t), c, H, W) -> ((b 2t), c_out, H, W), channels_last.

    The duplicated clip is never built: both output phases (even and odd frames) are one conv over the input
    frames (`upsample_phases`: 2/3 of the FLOPs for k = 3), then interleaved."""
    n, _, H, W = h.shape
    c = weight.shape[0]
    phase_weight, starts = upsample_phases(weight)
    # output i reads input frames i - pad ...: phase p's frame m is output m + lo + pad
    pad = phase_weight.shape[-1] - 1
    both_bias = None if bias is None else torch.cat([bias, bias])
    y = conv_rows(frames_as_rows(h, frames), phase_weight, both_bias, padding=pad).permute(0, 2, 3, 1)
    phases = [y[:, lo + pad:lo + pad + frames, :, p * c:(p + 1) * c] for p, lo in enumerate(starts)]
    out = torch.stack(phases, dim=2)  # (b, t, 2, H W, c): the phases interleaved as frames, one copy
    return out.reshape(2 * n, H, W, c).permute(0, 3, 1, 2)  # channels_last


def upsample_phases(weight: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """`weight` (c_out, c, k) run over the frame-duplicated clip, as convs over the input frames, one per phase.

    Output frame 2m + p (phase p) reads duplicated frame 2m + p + j - k // 2 at tap j, i.e. input frame
    m + floor((p + j - k // 2) / 2) -- also at the clip's ends, with replicate padding on both sides; taps that
    land on the same input frame are summed. Returns the phases' weights stacked (2 c_out, c, L), phase 0's first,
    over input offsets lo_p .. lo_p + L - 1, and [lo_0, lo_1]. For k = 3: L = 2 (2/3 of the k-tap FLOPs).
    """
    c_out, c, k = weight.shape
    r = k // 2
    offsets = [[(p + j - r) // 2 for j in range(k)] for p in (0, 1)]
    starts = [min(o) for o in offsets]
    length = max(max(o) - lo + 1 for o, lo in zip(offsets, starts))
    phases = []
    for p in (0, 1):
        w = weight.new_zeros(c_out, c, length)
        for j, o in enumerate(offsets[p]):
            w[:, :, o - starts[p]] += weight[:, :, j]
        phases.append(w)
    return torch.cat(phases, dim=0), starts


def frames_as_rows(h: torch.Tensor, frames: int) -> torch.Tensor:
    """((b t), c, H, W) -> (b, c, t, H W): a channels_last view when `h` is channels_last (else one copy)."""
    n, c, H, W = h.shape
    return h.permute(0, 2, 3, 1).reshape(n // frames, frames, H * W, c).permute(0, 3, 1, 2)


def rows_as_frames(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(b, c, t, H W) -> ((b t), c, H, W): a channels_last view when `y` is channels_last."""
    b, c, t, _ = y.shape
    return y.permute(0, 2, 3, 1).reshape(b * t, H, W, c).permute(0, 3, 1, 2)


def conv_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1,
              padding: int = 0) -> torch.Tensor:
    """(b, c, t, s) -> (b, c_out, t_out, s): output i = bias + sum_j weight[:, :, j] x[:, :, clamp(i stride - padding
    + j)], frames clamped to 0..t-1 (replicate padding). One (k, 1) conv2d over the replicate-padded frames: the
    padding copies the clip once (as fast at inference as fixing the boundary frames up after a zero-padded conv,
    and 1.4-1.6x faster forward + backward, measured on CPU)."""
    if padding:
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False) if autocast else contextlib.nullcontext():
            x = F.pad(x, (0, 0, padding, padding), mode="replicate")  # autocast would pad an fp32 copy
    return F.conv2d(x, weight[..., None], bias, stride=(stride, 1))
