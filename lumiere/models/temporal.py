"""The layers that inflation adds to the frozen T2I U-Net.

All of them see frames folded into the batch, `((b t), c, h, w)`, and are told `frames` (= t at their level)
explicitly; the per-sample time/text embedding `emb (b, e)` and text tokens `context (b, m, d)` are passed as is.

Temporal convolutions never move frames out of the batch layout: in channels_last memory (see
`lumiere.compute`) the activations `((b t), c, h, w)` are also a `(b, c, t, h w)` image, so a k-tap temporal
conv is a (k, 1) conv2d over that free view (`temporal_conv`), and the temporal layers add no layout copies to
the 2-D U-Net's (only the replicate padding's frames). The parameters stay `Conv1d` modules (replicate
padding), so checkpoints keep their keys and shapes; their weights are read through the ops' `weights` (a host's
cast and patch path, `lumiere.models.ops`).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .layers import Attention, FeedForward, group_norm, position_encoding, zero_init
from .ops import TORCH_OPS, Ops


def dirac_(conv: nn.Conv1d) -> nn.Conv1d:
    """Identity kernel: w[c, c, k // 2] = 1, all else 0 (the paper's identity-initialized resampling conv)."""
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


def temporal_conv1d(kernel: int, ch: int, ops: Ops = TORCH_OPS) -> nn.Conv1d:
    """The parameters of a temporal conv (odd kernel, replicate padding); `temporal_conv` applies them."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"conv_kernel: expected an odd positive temporal kernel size, got {kernel}")
    return ops.Conv1d(ch, ch, kernel, padding=kernel // 2, padding_mode="replicate")


def frames_as_rows(h: torch.Tensor, frames: int) -> torch.Tensor:
    """((b t), c, H, W) -> (b, c, t, H W): a channels_last view when `h` is channels_last (else one copy)."""
    n, c, H, W = h.shape
    return h.permute(0, 2, 3, 1).reshape(n // frames, frames, H * W, c).permute(0, 3, 1, 2)


def rows_as_frames(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(b, c, t, H W) -> ((b t), c, H, W): a channels_last view when `y` is channels_last."""
    b, c, t, _ = y.shape
    return y.permute(0, 2, 3, 1).reshape(b * t, H, W, c).permute(0, 3, 1, 2)


def temporal_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, frames: int,
                  stride: int = 1) -> torch.Tensor:
    """Convolve each pixel's frames with `weight` (c_out, c, k) (replicate padding), keeping frames 0, s, 2s, ...

    ((b t), c, H, W) -> ((b t_out), c_out, H, W), t_out = ceil(t / stride). Equal to `nn.Conv1d` (padding k // 2,
    replicate) run along the frames of each pixel, then strided. Computed as one (k, 1) conv2d over the
    (b, c, t, H W) view of the activations (`conv_rows`) -- free in channels_last memory, so no frame gather, no
    layout round-trip and no tap concatenation.
    """
    H, W = h.shape[-2:]
    y = conv_rows(frames_as_rows(h, frames), weight, bias, stride, padding=weight.shape[-1] // 2)
    return rows_as_frames(y, H, W)


def conv_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1,
              padding: int = 0) -> torch.Tensor:
    """(b, c, t, s) -> (b, c_out, t_out, s): output i = bias + sum_j weight[:, :, j] x[:, :, clamp(i stride - padding
    + j)], frames clamped to 0..t-1 (replicate padding). One (k, 1) conv2d over the replicate-padded frames: the
    padding copies the clip once (as fast at inference as fixing the boundary frames up after a zero-padded conv,
    and 1.4-1.6x faster forward + backward, measured)."""
    if padding:
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False) if autocast else contextlib.nullcontext():
            x = F.pad(x, (0, 0, padding, padding), mode="replicate")  # autocast would pad an fp32 copy
    return F.conv2d(x, weight[..., None], bias, stride=(stride, 1))


class TemporalDownsample(nn.Module):
    """Temporal /2 right after a spatial down-sampling: a 1-D conv (identity at init), then a stride of 2.

    At init the output is exactly frames 0, 2, 4, ... of the input (temporal striding). Only the kept frames
    are computed.
    """

    def __init__(self, ch: int, kernel: int = 3, ops: Ops = TORCH_OPS):
        super().__init__()
        self.conv = dirac_(temporal_conv1d(kernel, ch, ops))
        self.weights = ops.weights

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:  # ((b t), c, H, W) -> ((b t/2), c, H, W)
        return temporal_conv(h, *self.weights(self.conv, h), frames, stride=2)


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


class TemporalUpsample(nn.Module):
    """Temporal x2 right after a spatial up-sampling: frame duplication, then a 1-D conv (identity at init).

    At init out[2j] == out[2j + 1] == in[j]. The duplicated clip is never built: both output phases (even and
    odd frames) are one conv over the input frames (`upsample_phases`), then interleaved.
    """

    def __init__(self, ch: int, kernel: int = 3, ops: Ops = TORCH_OPS):
        super().__init__()
        self.conv = dirac_(temporal_conv1d(kernel, ch, ops))
        self.weights = ops.weights

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:  # ((b t), c, H, W) -> ((b 2t), c, H, W)
        n, c, H, W = h.shape
        conv_weight, bias = self.weights(self.conv, h)
        weight, starts = upsample_phases(conv_weight)
        pad = weight.shape[-1] - 1  # output i reads input frames i - pad ...: phase p's frame m is output m + lo + pad
        y = conv_rows(frames_as_rows(h, frames), weight, torch.cat([bias, bias]), padding=pad).permute(0, 2, 3, 1)
        phases = [y[:, lo + pad:lo + pad + frames, :, p * c:(p + 1) * c] for p, lo in enumerate(starts)]
        out = torch.stack(phases, dim=2)  # (b, t, 2, H W, c): the phases interleaved as frames, one copy
        return out.reshape(2 * n, H, W, c).permute(0, 3, 1, 2)  # channels_last


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
        self.conv_time = temporal_conv1d(kernel, ch, ops)
        self.proj_out = zero_init(ops.Conv2d(ch, ch, 1))
        self.weights = ops.weights

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        y = self.conv_space(F.silu(self.norm(h)))  # ((b t), c, H, W)
        scale, shift = repeat(self.film(F.silu(emb)), "b c -> (b t) c 1 1", t=frames).chunk(2, dim=1)
        y = F.silu(self.norm_time.film(y, scale, shift))
        y = F.silu(temporal_conv(y, *self.weights(self.conv_time, y), frames))
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
