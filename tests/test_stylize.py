"""Stylization by interpolating the T2I weights only."""
import pytest
import torch

from lumiere.checkpoint import build_model
from lumiere.configs import get_preset
from lumiere.models.unet2d import UNet2D
from lumiere.stylize import interpolate, stylize, t2i_state_dict


def base_and_style():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # trained temporal layers are not zero
        for p in model.temporal_parameters():
            p.normal_(0, 0.1)
    torch.manual_seed(1)
    style = UNet2D(cfg.unet).state_dict()
    return model, style


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_alpha_zero_is_bitwise_identity():
    model, style = base_and_style()
    with torch.no_grad():
        model.unet.conv_in.bias[0] = -0.0  # signed zeros must survive too
    before = snapshot(model)
    stylize(model, style, 0.0)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(bits(after[k]), bits(v)), k


def test_alpha_one_is_the_style_and_half_is_the_midpoint():
    model, style = base_and_style()
    orig = t2i_state_dict(model)
    orig = {k: v.clone() for k, v in orig.items()}
    mid = interpolate(orig, style, 0.5)
    for k in orig:
        if orig[k].is_floating_point():
            torch.testing.assert_close(mid[k], (orig[k] + style[k]) / 2)
    stylize(model, style, 1.0)
    for k, v in t2i_state_dict(model).items():
        assert torch.equal(bits(v), bits(style[k])), k


def test_temporal_weights_untouched():
    model, style = base_and_style()
    before = snapshot(model)
    stylize(model, style, 0.7)
    after = model.state_dict()
    temporal = [k for k in before if not k.startswith("unet.")]
    assert temporal
    for k in temporal:
        assert torch.equal(after[k], before[k]), k
    changed = [k for k in before if k.startswith("unet.") and not torch.equal(after[k], before[k])]
    assert "unet.conv_in.weight" in changed


def test_plain_unet_can_be_stylized():
    _, style = base_and_style()
    torch.manual_seed(2)
    unet = UNet2D(get_preset("tiny").unet)
    stylize(unet, style, 1.0)
    assert all(torch.equal(v, style[k]) for k, v in unet.state_dict().items())


def test_missing_and_unexpected_keys_are_named():
    model, style = base_and_style()
    missing = dict(style)
    del missing["mid_attn.cross_attn.to_q.weight"]
    with pytest.raises(KeyError, match="missing key 'mid_attn.cross_attn.to_q.weight'"):
        stylize(model, missing, 0.5)
    extra = {**style, "ghost.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match="unexpected key 'ghost.weight'"):
        stylize(model, extra, 0.5)


def test_shape_mismatch_is_named():
    model, style = base_and_style()
    bad = {**style, "conv_in.weight": torch.zeros(16, 3, 3, 3)}  # a 3-channel T2I vs the 7-channel model
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"key 'conv_in.weight' has shape \(16, 3, 3, 3\)"):
        stylize(model, bad, 0.5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-applied


@pytest.mark.parametrize("alpha", [-0.1, 1.01])
def test_alpha_out_of_range(alpha):
    model, style = base_and_style()
    with pytest.raises(ValueError, match="alpha"):
        stylize(model, style, alpha)
