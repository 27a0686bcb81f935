"""The pixel-space text-to-image U-Net (Imagen-like): the frozen backbone that STUNet inflates."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import UNetConfig
from .layers import ResBlock, SpatialTransformer, Upsample, downsample, group_norm, timestep_embedding
from .ops import TORCH_OPS, Ops


class Level(nn.Module):
    """One resolution of the U-Net: res blocks, each optionally followed by spatial attention."""

    def __init__(self, res: list[ResBlock], attn: list[nn.Module]):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)  # nn.Identity where the level has no attention


class UNet2D(nn.Module):
    """T2I U-Net over frames (n, c, h, w). Text reaches it by cross-attention and by a pooled FiLM vector.

    Its module tree is walked explicitly by `STUNet`, which interleaves the temporal layers. `ops`: the layer
    classes (`lumiere.models.ops`). It computes in `compute_dtype`, or in its weights' dtype when that is None.
    """

    def __init__(self, cfg: UNetConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.cfg = cfg
        self.ops = ops
        self.compute_dtype: torch.dtype | None = None
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        emb_dim = 4 * cfg.base_channels
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(ops.Linear(cfg.base_channels, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim))
        self.text_pool = ops.Linear(cfg.context_dim, emb_dim)
        self.conv_in = ops.Conv2d(cfg.in_channels, ch[0], 3, padding=1)

        def attn(level: int, c: int) -> nn.Module:
            if level not in cfg.attn_levels:
                return nn.Identity()
            return SpatialTransformer(c, cfg.head_dim, cfg.context_dim, ops)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_ch = [ch[0]]
        c = ch[0]
        for lvl, c_out in enumerate(ch):
            res, att = [], []
            for _ in range(cfg.num_res_blocks):
                res.append(ResBlock(c, c_out, emb_dim, cfg.dropout, ops))
                att.append(attn(lvl, c_out))
                c = c_out
                skip_ch.append(c)
            self.down.append(Level(res, att))
            if lvl < cfg.num_levels - 1:
                self.downsample.append(downsample(c, ops))
                skip_ch.append(c)

        self.mid_res1 = ResBlock(c, c, emb_dim, ops=ops)
        self.mid_attn = SpatialTransformer(c, cfg.head_dim, cfg.context_dim, ops)
        self.mid_res2 = ResBlock(c, c, emb_dim, ops=ops)

        self.up = nn.ModuleList()  # up[i] is level (num_levels - 1 - i): coarsest first
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(cfg.num_levels)):
            res, att = [], []
            for _ in range(cfg.num_res_blocks + 1):
                res.append(ResBlock(c + skip_ch.pop(), ch[lvl], emb_dim, cfg.dropout, ops))
                att.append(attn(lvl, ch[lvl]))
                c = ch[lvl]
            self.up.append(Level(res, att))
            if lvl > 0:
                self.upsample.append(Upsample(c, ops))

        self.norm_out = group_norm(c, ops)
        self.conv_out = ops.Conv2d(c, cfg.out_channels, 3, padding=1)

    def embed(self, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Time + mean-pooled text: the FiLM vector of every res block.  # (n,), (n, m, d) -> (n, e)"""
        emb = self.time_mlp(timestep_embedding(timestep, self.cfg.base_channels).to(context.dtype))
        return emb + self.text_pool(context.mean(dim=1))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x (n, c_in, h, w), timestep (n,), context (n, m, d) -> (n, c_out, h, w)
        check_spatial_size(x.shape[-2], x.shape[-1], self.cfg.num_levels)
        out_dtype, dtype = x.dtype, self.dtype_for_compute()
        x, context = x.to(dtype), context.to(dtype)
        emb = self.embed(timestep, context)
        h = self.conv_in(x.contiguous(memory_format=torch.channels_last))
        skips = [h]
        for lvl, level in enumerate(self.down):
            for res, att in zip(level.res, level.attn):
                h = run_attn(att, res(h, emb), context)
                skips.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb), context), emb)
        for i, level in enumerate(self.up):
            for res, att in zip(level.res, level.attn):
                h = run_attn(att, res(torch.cat([h, skips.pop()], dim=1), emb), context)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h))).to(out_dtype)


    def dtype_for_compute(self) -> torch.dtype:
        """`compute_dtype`, or the weights' dtype (lumiere.compute) when that is None."""
        return self.compute_dtype or self.conv_in.weight.dtype


def run_attn(att: nn.Module, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return h if isinstance(att, nn.Identity) else att(h, context)


def check_spatial_size(height: int, width: int, num_levels: int, name: str | None = None) -> None:
    """Frame sizes the U-Net can take; errors name `height` / `width`, or `name` (the input both came from)."""
    multiple = 2 ** (num_levels - 1)
    if name is not None and (height % multiple or width % multiple):
        raise ValueError(f"{name}: expected width and height multiples of {multiple} (the U-Net halves them "
                         f"{num_levels - 1} times), got {width}x{height}")
    for name, v in (("height", height), ("width", width)):
        if v % multiple:
            raise ValueError(f"{name}: expected a multiple of {multiple} (the U-Net halves it {num_levels - 1} "
                             f"times), got {v}")


def widen_input(unet: UNet2D, in_channels: int) -> UNet2D:
    """Give the first conv `in_channels` inputs; the new channels are zero-initialized (C = M = 0: same output)."""
    old = unet.conv_in
    if in_channels < old.in_channels:
        raise ValueError(f"in_channels: expected >= {old.in_channels} (the current width), got {in_channels}")
    new = unet.ops.Conv2d(in_channels, old.out_channels, 3, padding=1).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    new.bias.requires_grad_(old.bias.requires_grad)
    unet.conv_in = new
    unet.cfg.in_channels = in_channels
    return unet
