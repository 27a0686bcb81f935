"""Stylized generation by weight interpolation (Lumiere Sec. 4.2): W = alpha W_style + (1 - alpha) W_orig over the
text-to-image weights only; the temporal layers, trained with W_orig, are left untouched."""
from __future__ import annotations

import torch
from torch import nn

from .models.stunet import STUNet

T2I_PREFIX = "unet."  # inside a STUNet


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1] (the paper uses 0.5-1), got {alpha}")


def t2i_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The T2I weights, keyed as in a plain UNet2D (so a style T2I checkpoint matches them key for key)."""
    if isinstance(model, STUNet):
        return {k[len(T2I_PREFIX):]: v for k, v in model.state_dict().items() if k.startswith(T2I_PREFIX)}
    return model.state_dict()


def check_style_weights(orig: dict[str, torch.Tensor], style: dict[str, torch.Tensor]) -> None:
    for k in sorted(set(orig) | set(style)):
        if k not in style:
            raise KeyError(f"style weights: missing key '{k}' of the model's text-to-image U-Net")
        if k not in orig:
            raise KeyError(f"style weights: unexpected key '{k}' (not in the model's text-to-image U-Net)")
        if orig[k].shape != style[k].shape:
            raise ValueError(f"style weights: key '{k}' has shape {tuple(style[k].shape)}, the model has "
                             f"{tuple(orig[k].shape)}")


def interpolate(orig: dict[str, torch.Tensor], style: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """alpha * style + (1 - alpha) * orig, key by key (alpha = 0 returns the original tensors bitwise)."""
    check_alpha(alpha)
    check_style_weights(orig, style)
    if alpha in (0.0, 1.0):  # exact endpoints: the arithmetic below would turn -0.0 into +0.0
        return {k: style[k].to(v) if alpha and v.is_floating_point() else v for k, v in orig.items()}
    return {k: (alpha * style[k].to(v) + (1 - alpha) * v) if v.is_floating_point() else v  # v's device and dtype
            for k, v in orig.items()}


@torch.no_grad()
def stylize(model: nn.Module, style: dict[str, torch.Tensor], alpha: float) -> nn.Module:
    """Interpolate `model`'s T2I weights toward `style` (a UNet2D state dict) in place; returns the model."""
    unet = model.unet if isinstance(model, STUNet) else model
    unet.load_state_dict(interpolate(unet.state_dict(), style, alpha))
    return model
