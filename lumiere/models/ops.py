"""The layer classes the networks are built from: `Ops`, torch.nn by default.

A host passes its own (as ComfyUI's models take `operations=`): layers whose forward casts, moves or patches
their weights when they run (ComfyUI's `comfy.ops`: low-precision storage with compute casts, offloading,
LoRA through `weight_function`). The layers whose forward is the library's rather than the host's (the
fp32-statistics GroupNorm, the temporal convs: their kernels are `lumiere.kernels`) read their weights with
`Ops.weights`, the host's path to the weights as a layer applies them to an input. `Ops.attention` is the one
attention function every attention layer calls (the host may choose its own kernels, as ComfyUI does with its
attention flags).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .. import kernels


def own_weights(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's weight and bias as stored (torch.nn layers apply them as they are)."""
    return layer.weight, layer.bias


@dataclass(frozen=True)
class Ops:
    Linear: type = nn.Linear
    Conv1d: type = nn.Conv1d
    Conv2d: type = nn.Conv2d
    GroupNorm: type = nn.GroupNorm
    LayerNorm: type = nn.LayerNorm
    # (layer, input) -> (weight, bias) as the layer applies them to that input (dtype, device, patches)
    weights: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] = own_weights
    # (q, k, v, additive bias or None), each (n, heads, tokens, head_dim) -> (n, heads, tokens, head_dim)
    attention: Callable[..., torch.Tensor] = kernels.attention


TORCH_OPS = Ops()


@functools.cache
def layer_class(cls: type, base: type, weights: Callable) -> type:
    """`cls` (a torch.nn layer subclass with its own forward) on the host's layer class `base`, reading its
    weights with `weights` (its `applied_weights`). `cls` itself for torch.nn's layers."""
    if base in cls.__mro__ and weights is own_weights:
        return cls
    return type(cls.__name__, (cls, base), {"applied_weights": weights, "__module__": cls.__module__})
