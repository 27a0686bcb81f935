"""Building blocks shared by the U-Net and the temporal layers."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import kernels
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


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with fp32 statistics whatever the activations' dtype (returned in it): `kernels.group_norm`, which
    picks the kernel. The weights are read through `applied_weights` (a host's cast and patch path when built from
    its ops: `group_norm`)."""

    applied_weights = own_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.group_norm(x, self.num_groups, *self.applied_weights(x), self.eps)

    def film(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """self(x) * (1 + scale) + shift (FiLM), scale and shift (n, c, 1, 1) or broadcastable to them
        (`kernels.group_norm_film`)."""
        return kernels.group_norm_film(x, self.num_groups, *self.applied_weights(x), self.eps, scale, shift)


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
        self.attention = ops.attention  # the host's attention kernels (`Ops.attention`)

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
        out = self.attention(q, k, v, bias)
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
