"""The networks are built from the layer classes they are given (`lumiere.models.ops.Ops`), and every weight they
compute with reaches them through those layers: their forwards, or `Ops.weights` for the layers that use their
weights directly (the fp32-statistics GroupNorm, the temporal convs)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from lumiere.checkpoint import build_model
from lumiere.configs import get_preset
from lumiere.models.ops import TORCH_OPS, Ops, own_weights


class Linear(nn.Linear):
    pass


class Conv1d(nn.Conv1d):
    pass


class Conv2d(nn.Conv2d):
    pass


class GroupNorm(nn.GroupNorm):
    pass


class LayerNorm(nn.LayerNorm):
    pass


HOST_CLASSES = (Linear, Conv1d, Conv2d, GroupNorm, LayerNorm)


def host_ops(weights=own_weights) -> Ops:
    return Ops(Linear=Linear, Conv1d=Conv1d, Conv2d=Conv2d, GroupNorm=GroupNorm, LayerNorm=LayerNorm, weights=weights)


def tiny_config():
    return get_preset("tiny")


def inputs(config, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, config.unet.in_channels, 4, 16, 16, generator=g)
    return x, torch.rand(1, generator=g), torch.randn(1, 3, config.unet.context_dim, generator=g)


def test_every_layer_with_weights_comes_from_the_ops():
    net = build_model(tiny_config(), host_ops())
    with_weights = [(name, m) for name, m in net.named_modules() if getattr(m, "weight", None) is not None]
    assert with_weights and all(isinstance(m, HOST_CLASSES) for _, m in with_weights), \
        [name for name, m in with_weights if not isinstance(m, HOST_CLASSES)]
    default = build_model(tiny_config())
    assert not any(isinstance(m, HOST_CLASSES) for m in default.modules())


def test_host_layers_compute_the_same_and_keep_the_checkpoint_keys():
    config = tiny_config()
    torch.manual_seed(0)
    ref = build_model(config).eval()
    net = build_model(config, host_ops()).eval()
    assert list(net.state_dict()) == list(ref.state_dict())
    net.load_state_dict(ref.state_dict())
    with torch.no_grad():
        assert torch.equal(net(*inputs(config)), ref(*inputs(config)))


def test_weights_read_directly_go_through_ops_weights():
    """A host's `weights` (here: recording the layers, then scaling a temporal conv's kernel) is what the
    GroupNorms and the temporal convs compute with."""
    config = tiny_config()
    torch.manual_seed(0)
    ref = build_model(config).eval()
    seen, scale = [], {"conv": 1.0}

    def weights(layer, x):
        seen.append(layer)
        w, b = own_weights(layer, x)
        return (w * scale["conv"], b) if isinstance(layer, Conv1d) else (w, b)

    net = build_model(config, host_ops(weights)).eval()
    net.load_state_dict(ref.state_dict())
    with torch.no_grad():
        out = net(*inputs(config))
        assert torch.equal(out, ref(*inputs(config)))
        norms = [m for m in net.modules() if isinstance(m, GroupNorm)]
        temporal = [m for m in net.modules() if isinstance(m, Conv1d)]
        assert norms and temporal and {id(m) for m in norms + temporal} <= {id(m) for m in seen}
        scale["conv"] = 0.5
        assert not torch.allclose(net(*inputs(config)), out)


def test_compute_dtype_overrides_the_weights_dtype():
    """A host storing weights in one dtype and computing in another (core's manual cast) sets `compute_dtype`:
    here fp32 weights asked to compute in bf16 meet bf16 activations in torch's own layers (an error), so the
    setting reaches the forward."""
    config = tiny_config()
    net = build_model(config).eval()
    assert net.unet.dtype_for_compute() == torch.float32
    net.unet.compute_dtype = torch.bfloat16
    with torch.no_grad(), pytest.raises(RuntimeError):
        net(*inputs(config))


def test_default_ops_are_torch_nn():
    assert TORCH_OPS == Ops() and TORCH_OPS.Linear is nn.Linear and TORCH_OPS.GroupNorm is nn.GroupNorm
    assert replace(TORCH_OPS, Linear=Linear).Linear is Linear
