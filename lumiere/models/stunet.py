"""STUNet: a frozen T2I U-Net inflated with temporal layers (Bar-Tal et al. 2024, Sec. 3.1).

The forward walks the U-Net's own modules and interleaves the new ones explicitly: frames are folded into
the batch for the 2-D layers; a temporal /2 follows each chosen spatial down-sampling and a temporal x2 the
matching up-sampling, so every level has one frame count and skips stay shape-consistent; the per-frame
time/text conditioning is re-indexed to each level's frame count (no hooks).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange, repeat
from torch import nn

from ..configs import TemporalConfig
from .temporal import AttentionInflationBlock, ConvInflationBlock, TemporalDownsample, TemporalUpsample
from .unet2d import UNet2D, check_spatial_size, run_attn


def per_frame(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat a per-sample tensor for each frame of its level.  # (b, ...) -> ((b t), ...)"""
    return repeat(x, "b ... -> (b t) ...", t=frames)


class STUNet(nn.Module):
    """Space-time U-Net over videos (b, c, t, h, w) -> (b, c_out, t, h, w)."""

    def __init__(self, unet: UNet2D, cfg: TemporalConfig):
        super().__init__()
        levels = unet.cfg.num_levels
        if len(cfg.temporal_down) != levels - 1:
            raise ValueError(f"temporal_down: expected one flag per spatial down-sampling ({levels - 1}), "
                             f"got {len(cfg.temporal_down)}")
        self.unet = unet
        self.cfg = cfg
        self.activation_checkpointing = False  # a training option (TrainSpec.activation_checkpointing)
        # None, or a function every block runs through: block_runner(fn, *args) must return fn(*args) (a seam for
        # measurements, e.g. lumiere.memory.training_memory_estimate attributing each block's saved tensors)
        self.block_runner: Callable | None = None
        ch = [unet.cfg.base_channels * m for m in unet.cfg.channel_mult]
        coarsest = levels - 1

        ops = unet.ops  # the temporal layers are built from the U-Net's layer classes

        def block(level: int) -> nn.Module:
            if level < coarsest:
                return ConvInflationBlock(ch[level], unet.emb_dim, cfg.conv_kernel, ops)
            return AttentionInflationBlock(ch[level], unet.emb_dim, unet.cfg.context_dim, cfg.attn_layers,
                                           cfg.attn_head_dim, cfg.attn_mode, cfg.text_cross_attention, ops)

        n = unet.cfg.num_res_blocks
        self.down_blocks = nn.ModuleList(nn.ModuleList(block(lvl) for _ in range(n)) for lvl in range(levels))
        self.mid_block = block(coarsest)
        # up_blocks[i] mirrors unet.up[i] (coarsest level first)
        self.up_blocks = nn.ModuleList(nn.ModuleList(block(lvl) for _ in range(n + 1))
                                       for lvl in reversed(range(levels)))
        # keyed by the spatial resize k (between level k and k + 1) they follow
        self.temporal_down = nn.ModuleDict({str(k): TemporalDownsample(ch[k], cfg.conv_kernel, ops)
                                            for k, on in enumerate(cfg.temporal_down) if on})
        self.temporal_up = nn.ModuleDict({str(k): TemporalUpsample(ch[k + 1], cfg.conv_kernel, ops)
                                          for k, on in enumerate(cfg.temporal_down) if on})

    @property
    def frame_multiple(self) -> int:
        return 2 ** sum(self.cfg.temporal_down)

    def check_num_frames(self, num_frames: int, name: str = "num_frames") -> None:
        """`name`: the input the frame count came from, for the error (e.g. a ComfyUI input's name)."""
        m = self.frame_multiple
        if num_frames < 1 or num_frames % m:
            raise ValueError(f"{name}: expected a positive multiple of {m} frames (the STUNet halves the frame "
                             f"count {sum(self.cfg.temporal_down)} times), got {num_frames}")

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x (b, c_in, t, h, w), timestep (b,), context (b, m, d) -> (b, c_out, t, h, w)
        b, _, frames, height, width = x.shape
        self.check_num_frames(frames)
        check_spatial_size(height, width, self.unet.cfg.num_levels)
        u = self.unet
        out_dtype, dtype = x.dtype, u.dtype_for_compute()
        x, context = x.to(dtype), context.to(dtype)
        emb = u.embed(timestep, context)  # (b, e)
        h = u.conv_in(rearrange(x, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last))
        skips = [h]
        for lvl, level in enumerate(u.down):
            emb_f, ctx_f = per_frame(emb, frames), per_frame(context, frames)
            for res, att, tblock in zip(level.res, level.attn, self.down_blocks[lvl]):
                h = self._block(res, att, tblock, h, emb_f, ctx_f, emb, context, frames)
                skips.append(h)
            if lvl < len(u.downsample):
                h = u.downsample[lvl](h)
                if str(lvl) in self.temporal_down:
                    h = self.temporal_down[str(lvl)](h, frames)
                    frames //= 2
                skips.append(h)
        emb_f, ctx_f = per_frame(emb, frames), per_frame(context, frames)
        h = self._checkpointed(self._mid, h, emb_f, ctx_f, emb, context, frames)
        levels = u.cfg.num_levels
        for i, level in enumerate(u.up):
            emb_f, ctx_f = per_frame(emb, frames), per_frame(context, frames)
            for res, att, tblock in zip(level.res, level.attn, self.up_blocks[i]):
                h = self._block(res, att, tblock, torch.cat([h, skips.pop()], dim=1), emb_f, ctx_f, emb, context,
                                frames)
            if i < len(u.upsample):
                h = u.upsample[i](h)
                k = str(levels - 2 - i)  # the spatial resize this up-sampling mirrors
                if k in self.temporal_up:
                    h = self.temporal_up[k](h, frames)
                    frames *= 2
        out = u.conv_out(F.silu(u.norm_out(h)))
        return rearrange(out, "(b t) c h w -> b c t h w", b=b).to(out_dtype)

    # one "block" = a U-Net res block, its spatial attention and the temporal block after it
    def _block(self, res, att, tblock, h, emb_f, ctx_f, emb, context, frames: int) -> torch.Tensor:
        def block(h, emb_f, ctx_f, emb, context, frames):
            return tblock(run_attn(att, res(h, emb_f), ctx_f), emb, context, frames)
        return self._checkpointed(block, h, emb_f, ctx_f, emb, context, frames)

    def _mid(self, h, emb_f, ctx_f, emb, context, frames: int) -> torch.Tensor:
        u = self.unet
        return u.mid_res2(self.mid_block(u.mid_attn(u.mid_res1(h, emb_f), ctx_f), emb, context, frames), emb_f)

    def _checkpointed(self, fn, *args) -> torch.Tensor:
        """fn(*args). With `activation_checkpointing` (training only), only the block's inputs are kept and its
        activations are recomputed in the backward pass: peak memory falls to about one block's activations
        plus the block inputs, for about one more forward of compute. Every input is an argument (a closure
        over the forward's loop variables would be re-read, changed, at recompute time)."""
        run = fn if self.block_runner is None else functools.partial(self.block_runner, fn)
        if self.activation_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)
        return run(*args)

    def temporal_parameters(self):
        return (p for name, p in self.named_parameters() if not name.startswith("unet."))


def inflate(unet: UNet2D, cfg: TemporalConfig | None = None) -> STUNet:
    """Inflate a T2I U-Net into a STUNet (the U-Net is used in place, not copied)."""
    return STUNet(unet, cfg or TemporalConfig(temporal_down=(True,) * (unet.cfg.num_levels - 1)))


def freeze_t2i(model: STUNet, train_input_conv: bool = False) -> dict[str, int]:
    """Freeze the T2I weights, train only the temporal layers (and optionally the widened first conv).

    Returns the parameter counts, for the training log.
    """
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("unet.") or (train_input_conv and name.startswith("unet.conv_in.")))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}
