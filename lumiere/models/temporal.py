"""The layers that inflation adds to the frozen T2I U-Net.

All of them see frames folded into the batch, `((b t), c, h, w)`, and are told `frames` (= t at their level)
explicitly; the per-sample time/text embedding `emb (b, e)` and text tokens `context (b, m, d)` are passed as is.

The temporal convolutions are `TemporalConv` layers: `Conv1d` parameters (so checkpoints keep their keys and
shapes) whose forward convolves each pixel's frames in the batch layout (`lumiere.kernels.temporal_conv`, free
views in channels_last memory). Their weights are read through the ops' `weights` (a host's cast and patch path,
`lumiere.models.ops`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .. import kernels
from .layers import Attention, FeedForward, group_norm, position_encoding, zero_init
from .ops import TORCH_OPS, Ops, layer_class, own_weights


def dirac_(conv: nn.Conv1d) -> nn.Conv1d:
    """Identity kernel: w[c, c, k // 2] = 1, all else 0 (the paper's identity-initialized resampling conv)."""
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


class TemporalConv(nn.Conv1d):
    """A k-tap conv along each pixel's frames (odd k, padding k // 2, replicate, its stride), frames in the batch:
    ((b t), c, H, W), frames -> ((b t / stride), c, H, W) (`kernels.temporal_conv`). Built by `temporal_conv`;
    the weights are read through `applied_weights` (a host's cast and patch path when built from its ops)."""

    applied_weights = own_weights

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        return kernels.temporal_conv(h, *self.applied_weights(h), frames, self.stride[0])


class TemporalUpsampleConv(TemporalConv):
    """Every frame twice, then the k-tap conv along each pixel's frames: ((b t), c, H, W), frames -> ((b 2t), c, H, W)
    (`kernels.temporal_upsample`, which never builds the duplicated clip)."""

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        return kernels.temporal_upsample(h, *self.applied_weights(h), frames)


def temporal_conv(kernel: int, ch: int, ops: Ops = TORCH_OPS, stride: int = 1,
                  cls: type = TemporalConv) -> TemporalConv:
    """A `cls` (`TemporalConv` or `TemporalUpsampleConv`) on the ops' Conv1d: odd kernel, replicate padding."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"conv_kernel: expected an odd positive temporal kernel size, got {kernel}")
    layer = layer_class(cls, ops.Conv1d, ops.weights)
    return layer(ch, ch, kernel, stride=stride, padding=kernel // 2, padding_mode="replicate")


class TemporalDownsample(nn.Module):
    """Temporal /2 right after a spatial down-sampling: a 1-D conv (identity at init), then a stride of 2.

    At init the output is exactly frames 0, 2, 4, ... of the input (temporal striding). Only the kept frames
    are computed.
    """

    def __init__(self, ch: int, kernel: int = 3, ops: Ops = TORCH_OPS):
        super().__init__()
        self.conv = dirac_(temporal_conv(kernel, ch, ops, stride=2))

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:  # ((b t), c, H, W) -> ((b t/2), c, H, W)
        return self.conv(h, frames)


class TemporalUpsample(nn.Module):
    """Temporal x2 right after a spatial up-sampling: frame duplication, then a 1-D conv (identity at init).

    At init out[2j] == out[2j + 1] == in[j]. The duplicated clip is never built (`kernels.temporal_upsample`).
    """

    def __init__(self, ch: int, kernel: int = 3, ops: Ops = TORCH_OPS):
        super().__init__()
        self.conv = dirac_(temporal_conv(kernel, ch, ops, cls=TemporalUpsampleConv))

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:  # ((b t), c, H, W) -> ((b 2t), c, H, W)
        return self.conv(h, frames)


class ConvInflationBlock(nn.Module):
    """Factorized space-time conv (R(2+1)D), a residual branch: h + P(Conv1d_t(Conv2d_s(h))), P zero-initialized.

    The time + pooled-text vector modulates it (FiLM), so the prompt reaches every temporal block.
    """

    def __init__(self, ch: int, emb_dim: int, kernel: int = 3, ops: Ops = TORCH_OPS):
        super().__init__()
        self.norm = group_norm(ch, ops)
        self.conv_space = ops.Conv2d(ch, ch, 3, padding=1)
        self.film = ops.Linear(emb_dim, 2 * ch)
        self.norm_time = group_norm(ch, ops)
        self.conv_time = temporal_conv(kernel, ch, ops)
        self.proj_out = zero_init(ops.Conv2d(ch, ch, 1))

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        y = self.conv_space(F.silu(self.norm(h)))  # ((b t), c, H, W)
        scale, shift = repeat(self.film(F.silu(emb)), "b c -> (b t) c 1 1", t=frames).chunk(2, dim=1)
        y = F.silu(self.norm_time.film(y, scale, shift))
        y = F.silu(self.conv_time(y, frames))
        return h + self.proj_out(y)


class TemporalTransformerLayer(nn.Module):
    def __init__(self, ch: int, head_dim: int, context_dim: int | None, ops: Ops = TORCH_OPS):
        super().__init__()
        self.norm1, self.norm3 = ops.LayerNorm(ch), ops.LayerNorm(ch)
        self.attn = Attention(ch, head_dim, ops=ops)
        self.norm2 = ops.LayerNorm(ch) if context_dim else None
        self.cross_attn = Attention(ch, head_dim, context_dim, ops) if context_dim else None
        self.ff = FeedForward(ch, mult=2, ops=ops)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x (n, l, c); context (b, m, d) with n a multiple of b (rows of one sample are consecutive)
        x = x + self.attn(self.norm1(x))
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class AttentionInflationBlock(nn.Module):
    """Stacked temporal self-attention (with frame position codes) at the coarsest level, a residual branch.

    mode "temporal": tokens are the frames of one pixel (the paper's 1-D attention).
    mode "spacetime": tokens are all (t, y, x) positions of the coarsest level, with t/y/x codes.
    The output projection is zero-initialized, so the block starts as an identity.
    """

    def __init__(self, ch: int, emb_dim: int, context_dim: int, layers: int, head_dim: int,
                 mode: str = "temporal", text_cross_attention: bool = True, ops: Ops = TORCH_OPS):
        super().__init__()
        if mode not in ("temporal", "spacetime"):
            raise ValueError(f"attn_mode: expected 'temporal' or 'spacetime', got {mode!r}")
        self.mode = mode
        self.norm = group_norm(ch, ops)
        self.proj_in = ops.Linear(ch, ch)
        self.film = ops.Linear(emb_dim, 2 * ch)
        ctx = context_dim if text_cross_attention else None
        self.layers = nn.ModuleList(TemporalTransformerLayer(ch, head_dim, ctx, ops) for _ in range(layers))
        self.proj_out = zero_init(ops.Linear(ch, ch))

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        H, W = h.shape[-2:]
        c = h.shape[1]
        x = self.proj_in(rearrange(self.norm(h), "(b t) c H W -> b t H W c", t=frames))
        scale, shift = rearrange(self.film(F.silu(emb)), "b c -> b 1 1 1 c").chunk(2, dim=-1)
        x = x * (1 + scale) + shift
        x = x + position_encoding(frames, c, h.device).to(x.dtype)[:, None, None, :]
        if self.mode == "temporal":
            seq = rearrange(x, "b t H W c -> (b H W) t c")  # the context is shared by each sample's H W rows
        else:
            x = x + position_encoding(H, c, h.device).to(x.dtype)[None, :, None, :]
            x = x + position_encoding(W, c, h.device).to(x.dtype)[None, None, :, :]
            seq = rearrange(x, "b t H W c -> b (t H W) c")
        for layer in self.layers:
            seq = layer(seq, context)
        seq = self.proj_out(seq)
        if self.mode == "temporal":
            out = rearrange(seq, "(b H W) t c -> (b t) c H W", H=H, W=W)
        else:
            out = rearrange(seq, "b (t H W) c -> (b t) c H W", t=frames, H=H, W=W)
        return h + out
