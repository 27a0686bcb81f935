"""The layers that inflation adds to the frozen T2I U-Net.

All of them see frames folded into the batch, `((b t), c, h, w)`, and are told `frames` (= t at their level)
explicitly; the per-sample time/text embedding `emb (b, e)` and text tokens `context (b, m, d)` are passed as is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .layers import Attention, FeedForward, group_norm, position_encoding, zero_init


def dirac_(conv: nn.Conv1d) -> nn.Conv1d:
    """Identity kernel: w[c, c, k // 2] = 1, all else 0 (the paper's identity-initialized resampling conv)."""
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


class TemporalDownsample(nn.Module):
    """Temporal /2 right after a spatial down-sampling: a 1-D conv (identity at init), then a stride of 2.

    At init the output is exactly frames 0, 2, 4, ... of the input (temporal striding).
    """

    def __init__(self, ch: int, kernel: int = 3):
        super().__init__()
        self.conv = dirac_(nn.Conv1d(ch, ch, kernel, padding=kernel // 2, padding_mode="replicate"))

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:  # ((b t), c, H, W) -> ((b t/2), c, H, W)
        H, W = h.shape[-2:]
        x = rearrange(h, "(b t) c H W -> (b H W) c t", t=frames)
        x = self.conv(x)[..., ::2]
        return rearrange(x, "(b H W) c t -> (b t) c H W", H=H, W=W)


class TemporalUpsample(nn.Module):
    """Temporal x2 right after a spatial up-sampling: frame duplication, then a 1-D conv (identity at init).

    At init out[2j] == out[2j + 1] == in[j].
    """

    def __init__(self, ch: int, kernel: int = 3):
        super().__init__()
        self.conv = dirac_(nn.Conv1d(ch, ch, kernel, padding=kernel // 2, padding_mode="replicate"))

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:  # ((b t), c, H, W) -> ((b 2t), c, H, W)
        H, W = h.shape[-2:]
        x = rearrange(h, "(b t) c H W -> (b H W) c t", t=frames)
        x = self.conv(x.repeat_interleave(2, dim=-1))
        return rearrange(x, "(b H W) c t -> (b t) c H W", H=H, W=W)


class ConvInflationBlock(nn.Module):
    """Factorized space-time conv (R(2+1)D), a residual branch: h + P(Conv1d_t(Conv2d_s(h))), P zero-initialized.

    The time + pooled-text vector modulates it (FiLM), so the prompt reaches every temporal block.
    """

    def __init__(self, ch: int, emb_dim: int, kernel: int = 3):
        super().__init__()
        self.norm = group_norm(ch)
        self.conv_space = nn.Conv2d(ch, ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * ch)
        self.norm_time = group_norm(ch)
        self.conv_time = nn.Conv1d(ch, ch, kernel, padding=kernel // 2, padding_mode="replicate")
        self.proj_out = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        H, W = h.shape[-2:]
        y = self.conv_space(F.silu(self.norm(h)))  # ((b t), c, H, W)
        scale, shift = repeat(self.film(F.silu(emb)), "b c -> (b t) c 1 1", t=frames).chunk(2, dim=1)
        y = F.silu(self.norm_time(y) * (1 + scale) + shift)
        y = rearrange(y, "(b t) c H W -> (b H W) c t", t=frames)
        y = F.silu(self.conv_time(y))
        y = rearrange(y, "(b H W) c t -> (b t) c H W", H=H, W=W)
        return h + self.proj_out(y)


class TemporalTransformerLayer(nn.Module):
    def __init__(self, ch: int, head_dim: int, context_dim: int | None):
        super().__init__()
        self.norm1, self.norm3 = nn.LayerNorm(ch), nn.LayerNorm(ch)
        self.attn = Attention(ch, head_dim)
        self.norm2 = nn.LayerNorm(ch) if context_dim else None
        self.cross_attn = Attention(ch, head_dim, context_dim) if context_dim else None
        self.ff = FeedForward(ch, mult=2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # x (n, l, c), context (n, m, d)
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
                 mode: str = "temporal", text_cross_attention: bool = True):
        super().__init__()
        if mode not in ("temporal", "spacetime"):
            raise ValueError(f"attn_mode: expected 'temporal' or 'spacetime', got {mode!r}")
        self.mode = mode
        self.norm = group_norm(ch)
        self.proj_in = nn.Linear(ch, ch)
        self.film = nn.Linear(emb_dim, 2 * ch)
        ctx = context_dim if text_cross_attention else None
        self.layers = nn.ModuleList(TemporalTransformerLayer(ch, head_dim, ctx) for _ in range(layers))
        self.proj_out = zero_init(nn.Linear(ch, ch))

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        H, W = h.shape[-2:]
        c = h.shape[1]
        x = self.proj_in(rearrange(self.norm(h), "(b t) c H W -> b t H W c", t=frames))
        scale, shift = rearrange(self.film(F.silu(emb)), "b c -> b 1 1 1 c").chunk(2, dim=-1)
        x = x * (1 + scale) + shift
        x = x + position_encoding(frames, c, h.device).to(x.dtype)[:, None, None, :]
        if self.mode == "temporal":
            seq = rearrange(x, "b t H W c -> (b H W) t c")
            ctx = repeat(context, "b m d -> (b H W) m d", H=H, W=W)
        else:
            x = x + position_encoding(H, c, h.device).to(x.dtype)[None, :, None, :]
            x = x + position_encoding(W, c, h.device).to(x.dtype)[None, None, :, :]
            seq = rearrange(x, "b t H W c -> b (t H W) c")
            ctx = context
        for layer in self.layers:
            seq = layer(seq, ctx)
        seq = self.proj_out(seq)
        if self.mode == "temporal":
            out = rearrange(seq, "(b H W) t c -> (b t) c H W", H=H, W=W)
        else:
            out = rearrange(seq, "b (t H W) c -> (b t) c H W", t=frames, H=H, W=W)
        return h + out
