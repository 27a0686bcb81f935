"""Building blocks shared by the U-Net and the temporal layers."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .ops import TORCH_OPS, Ops, layer_class, own_weights


def timestep_embedding(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the diffusion time t in (0, 1) (scaled by 1000).  # (n,) -> (n, dim)"""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=timestep.device, dtype=torch.float32) / half)
    args = timestep.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def position_encoding(length: int, dim: int, device=None) -> torch.Tensor:
    """Sinusoidal position codes for `length` positions (frames, rows or columns).  # (length, dim)"""
    pos = torch.arange(length, device=device, dtype=torch.float32)
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / half)
    args = pos[:, None] * freqs[None]
    pe = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(pe, (0, dim - pe.shape[-1]))


# torch 2.13's CPU GroupNorm on channels_last bf16 activations, measured (one thread, 8-128 images of 32-256
# channels; fp32 copies keep channels_last):
# - without autograd: fastest as it comes for frames of >= 32 x 32 pixels, but 4-7x slower than normalising an
#   fp32 copy for 8 x 8 and 16 x 16 frames (another kernel): smaller frames take the fp32 copy;
# - with autograd (forward + backward): as it comes 2-5x slower than either copy; an fp32 copy is 1.1-1.6x faster
#   than an NCHW copy for >= 32 x 32 frames, an NCHW copy 1.2-1.5x faster for 16 x 16.
HALF_CHANNELS_LAST_GROUP_NORM_MIN_PIXELS = 32 * 32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with fp32 statistics whatever the activations' dtype (returned in it).

    bf16 / fp16 activations go to torch's own kernel, which accumulates the statistics in fp32 (its output is the
    fp32 computation rounded, tested). A channels_last input is normalised as it comes, as an fp32 copy or as an
    NCHW copy, whichever measured fastest for its frame size with and without autograd (see above). fp32
    activations are normalised as they come. The weights are read through `applied_weights` (a host's cast and
    patch path when built from its ops: `group_norm`)."""

    applied_weights = own_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalize(x, *self.applied_weights(x))

    def film(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """self(x) * (1 + scale) + shift (FiLM), scale and shift (n, c, 1, 1) or broadcastable to them.

        Without autograd the norm's affine and the FiLM are folded into one per-sample weight and bias applied in
        one pass (measured: 1.3x faster in fp32, 2.5x in bf16); with autograd they stay three steps, whose
        backward is faster than the folded form's per-sample reductions."""
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, self.weight, scale, shift)):
            return self(x) * (1 + scale) + shift
        norm_weight, norm_bias = self.applied_weights(x)
        y = self._normalize(x, None, None)
        gain = 1 + scale.float()
        weight = norm_weight.float()[:, None, None] * gain
        bias = norm_bias.float()[:, None, None] * gain + shift.float()
        return torch.addcmul(bias.to(y.dtype), y, weight.to(y.dtype))

    def _normalize(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        recorded = torch.is_grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad))
        if x.dtype in (torch.bfloat16, torch.float16):
            w, b = (None if a is None else a.to(x.dtype) for a in (weight, bias))
            large = x.shape[-2] * x.shape[-1] >= HALF_CHANNELS_LAST_GROUP_NORM_MIN_PIXELS
            if not channels_last or (large and not recorded):
                return F.group_norm(x, self.num_groups, w, b, self.eps)
            if recorded and not (large and x.requires_grad):  # NCHW copies (also the frozen-input crash below)
                y = F.group_norm(x.contiguous(), self.num_groups, w, b, self.eps)
                return y.contiguous(memory_format=torch.channels_last)
            w, b = (None if a is None else a.float() for a in (weight, bias))
            return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)
        w, b = (None if a is None else a.float() for a in (weight, bias))
        if channels_last and recorded and not x.requires_grad:
            # torch 2.13 CPU: the channels_last backward for the weights alone (a frozen input, e.g. the first
            # trained layer after the frozen T2I) crashes the process; NCHW here is exact and only costs a copy
            y = F.group_norm(x.float().contiguous(), self.num_groups, w, b, self.eps)
            return y.to(x.dtype).contiguous(memory_format=torch.channels_last)
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def group_norm(channels: int, ops: Ops = TORCH_OPS) -> GroupNorm32:
    cls = layer_class(GroupNorm32, ops.GroupNorm, ops.weights)
    return cls(min(32, channels // 4) if channels >= 4 else 1, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the output projection of a residual branch, so the branch starts as an exact identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Pre-norm residual block with a FiLM (scale, shift) from the time + pooled-text embedding."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, ops: Ops = TORCH_OPS):
        super().__init__()
        self.norm1 = group_norm(in_ch, ops)
        self.conv1 = ops.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = ops.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch, ops)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = ops.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = ops.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # x (n, c, h, w), emb (n, e)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2.film(h, scale, shift)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


# Attention kernels on CPU, measured with torch 2.13 and one thread (`python -m lumiere bench` re-measures the
# network). fp32: SDPA wins or ties everywhere, on every CPU measured. bf16 / fp16, which depends on the CPU:
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
    """Whether plain matmul + softmax beats SDPA for these (n, h, l, d) queries and (n, h, m, d) keys."""
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
    """softmax(q k^T / sqrt(d) + bias) v, with the faster kernel for the case.  (n, h, l, d) -> (n, h, l, d)"""
    if not use_matmul_attention(q, k):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head attention of a token sequence over itself or over a context.

    A context of `b` samples may serve `n = b * r` query rows (r consecutive rows per sample, e.g. the pixels
    of one clip in per-pixel temporal attention): it is projected once per sample, then shared.
    """

    def __init__(self, dim: int, head_dim: int, context_dim: int | None = None, ops: Ops = TORCH_OPS):
        super().__init__()
        self.heads = max(1, dim // head_dim)
        self.to_q = ops.Linear(dim, dim, bias=False)
        self.to_kv = ops.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        # x (n, l, dim), context (n or n / r, m, d)
        context = x if context is None else context
        n, b = x.shape[0], context.shape[0]
        if n % b:
            raise ValueError(f"context: expected a batch dividing the queries' batch {n}, got {b}")
        q = rearrange(self.to_q(x), "n l (h d) -> n h l d", h=self.heads)
        k, v = (rearrange(a, "b m (h d) -> b h m d", h=self.heads) for a in self.to_kv(context).chunk(2, dim=-1))
        if b != n:
            k, v = (a.repeat_interleave(n // b, dim=0) for a in (k, v))
        out = attention(q, k, v, bias)
        return self.to_out(rearrange(out, "n h l d -> n l (h d)"))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4, ops: Ops = TORCH_OPS):
        super().__init__(ops.Linear(dim, dim * mult), nn.GELU(), ops.Linear(dim * mult, dim))


class SpatialTransformer(nn.Module):
    """Self-attention over the pixels of a frame, then cross-attention to the text tokens."""

    def __init__(self, ch: int, head_dim: int, context_dim: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.norm = group_norm(ch, ops)
        self.norm1, self.norm2, self.norm3 = ops.LayerNorm(ch), ops.LayerNorm(ch), ops.LayerNorm(ch)
        self.self_attn = Attention(ch, head_dim, ops=ops)
        self.cross_attn = Attention(ch, head_dim, context_dim, ops)
        self.ff = FeedForward(ch, ops=ops)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # x (n, c, h, w), context (n, m, d)
        h, w = x.shape[-2:]
        t = rearrange(self.norm(x), "n c h w -> n (h w) c")
        t = t + self.self_attn(self.norm1(t))
        t = t + self.cross_attn(self.norm2(t), context)
        t = t + self.ff(self.norm3(t))
        return x + rearrange(t, "n (h w) c -> n c h w", h=h, w=w)


def downsample(ch: int, ops: Ops = TORCH_OPS) -> nn.Conv2d:
    """Spatial /2 by a strided 3x3 conv."""
    return ops.Conv2d(ch, ch, 3, stride=2, padding=1)


class Upsample(nn.Module):
    """Spatial x2: nearest-neighbour then a 3x3 conv."""

    def __init__(self, ch: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.conv = ops.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
