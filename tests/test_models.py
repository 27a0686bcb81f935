"""UNet2D, STUNet inflation (frame folding, per-level frame counts, init equivalences), presets."""
import dataclasses

import pytest
import torch

from lumiere.checkpoint import build_bundle, build_model
from lumiere.configs import PRESETS, TemporalConfig, UNetConfig, get_preset
from lumiere.models.stunet import STUNet, freeze_t2i, inflate
from lumiere.models.temporal import (AttentionInflationBlock, ConvInflationBlock, TemporalDownsample,
                                     TemporalUpsample)
from lumiere.models.unet2d import UNet2D, widen_input

TINY_UNET = get_preset("tiny").unet


def three_level_unet(in_channels: int = 3, seed: int = 0) -> UNet2D:
    """Three levels (two spatial /2), small enough for CPU tests."""
    torch.manual_seed(seed)
    return UNet2D(UNetConfig(in_channels=in_channels, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                             attn_levels=(2,), head_dim=8, context_dim=16))


def tiny_unet(seed: int = 0) -> UNet2D:
    torch.manual_seed(seed)
    return UNet2D(dataclasses.replace(TINY_UNET))


def temporal_cfg(down: tuple[bool, ...], mode: str = "temporal") -> TemporalConfig:
    return TemporalConfig(temporal_down=down, attn_layers=1, attn_head_dim=8, attn_mode=mode)


def inputs(unet: UNet2D, b: int, t: int, h: int = 16, w: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, unet.cfg.in_channels, t, h, w, generator=g)
    ts = torch.rand(b, generator=g)
    ctx = torch.randn(b, 4, unet.cfg.context_dim, generator=g)
    return x, ts, ctx


def per_frame_t2i(unet: UNet2D, x, ts, ctx):
    """The T2I U-Net applied to each frame separately (the reference an inflated model starts from)."""
    return torch.stack([unet(x[:, :, k], ts, ctx) for k in range(x.shape[2])], dim=2)


def perturb_new_layers(model: STUNet, seed: int = 3) -> None:
    """Give every temporal parameter a random value, as after training (so the temporal layers mix frames)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.temporal_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- UNet2D


@pytest.mark.parametrize("h,w", [(16, 16), (8, 24)])
def test_unet2d_shapes(h, w):
    unet = tiny_unet()
    x = torch.randn(3, 7, h, w)
    out = unet(x, torch.rand(3), torch.randn(3, 5, TINY_UNET.context_dim))
    assert out.shape == (3, 3, h, w)


def test_unet2d_rejects_bad_size():
    unet = three_level_unet()
    with pytest.raises(ValueError, match=r"width: expected a multiple of 4.*got 18"):
        unet(torch.randn(1, 3, 16, 18), torch.rand(1), torch.randn(1, 4, 16))


# ---------------------------------------------------------------- temporal resampling at init


def test_temporal_downsample_is_frame_striding_at_init():
    b, t = 2, 8
    h = torch.randn(b * t, 5, 3, 4)
    out = TemporalDownsample(5)(h, frames=t)
    expected = h.view(b, t, 5, 3, 4)[:, ::2].reshape(b * t // 2, 5, 3, 4)
    assert torch.equal(out, expected)


def test_temporal_upsample_is_frame_duplication_at_init():
    b, t = 2, 4
    h = torch.randn(b * t, 5, 3, 4)
    out = TemporalUpsample(5)(h, frames=t).view(b, 2 * t, 5, 3, 4)
    src = h.view(b, t, 5, 3, 4)
    assert torch.equal(out[:, 0::2], src)
    assert torch.equal(out[:, 1::2], src)


# ---------------------------------------------------------------- STUNet structure


def _record_frames(model: STUNet, b: int) -> dict[str, list[int]]:
    """Frames seen by each frozen res block (its input batch is b * frames), in execution order."""
    seen = {"down": [], "up": []}
    for side, levels in (("down", model.unet.down), ("up", model.unet.up)):
        for level in levels:
            for res in level.res:
                res.register_forward_pre_hook(lambda m, args, side=side: seen[side].append(args[0].shape[0] // b))
    return seen


@pytest.mark.parametrize("down", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("t", [8, 16, 80])
def test_frame_count_per_level(down, t):
    """Each level has one frame count: T halves after each chosen spatial /2, and the up path (whose inputs are
    cat(h, skip)) mirrors it, so skips are shape-consistent."""
    b = 2
    with torch.device("meta"):
        model = inflate(three_level_unet(), temporal_cfg(down))
        x, ts, ctx = (torch.empty(b, 3, t, 16, 16), torch.empty(b), torch.empty(b, 4, 16))
        seen = _record_frames(model, b)
        out = model(x, ts, ctx)
    assert out.shape == (b, 3, t, 16, 16)
    level_frames = [t, t // (2 if down[0] else 1), t // (2 ** sum(down))]
    assert seen["down"] == level_frames  # one res block per level
    assert seen["up"] == [f for f in reversed(level_frames) for _ in range(2)]  # two res blocks per level


def test_paper_frame_counts_80_to_5():
    with torch.device("meta"):
        model = build_model(get_preset("paper"))
        seen = _record_frames(model, 1)
        model(torch.empty(1, 7, 80, 128, 128), torch.empty(1), torch.empty(1, 128, 4096))
    assert sorted(set(seen["down"]), reverse=True) == [80, 40, 20, 10, 5]
    assert sorted(set(seen["up"]), reverse=True) == [80, 40, 20, 10, 5]


def test_frames_folded_per_video():
    """Batch elements stay independent and frames interact only within their own video (b and t not mixed)."""
    unet = three_level_unet()
    model = inflate(unet, temporal_cfg((True, True)))
    perturb_new_layers(model)
    x, ts, ctx = inputs(unet, 2, 8)
    with torch.no_grad():
        both = model(x, ts, ctx)
        alone = torch.cat([model(x[i:i + 1], ts[i:i + 1], ctx[i:i + 1]) for i in range(2)])
        x2 = x.clone()
        x2[0, :, 5] += 1.0  # change one frame of video 0
        changed = model(x2, ts, ctx)
    torch.testing.assert_close(both, alone, atol=1e-5, rtol=0)
    assert torch.equal(changed[1], both[1])  # the other video is untouched
    assert (changed[0, :, 0] - both[0, :, 0]).abs().max() > 1e-4  # the temporal layers reach other frames


# ---------------------------------------------------------------- initialization


@pytest.mark.parametrize("mode", ["temporal", "spacetime"])
def test_no_temporal_resampling_equals_t2i_per_frame(mode):
    unet = three_level_unet()
    model = inflate(unet, temporal_cfg((False, False), mode))
    x, ts, ctx = inputs(unet, 2, 6)
    with torch.no_grad():
        diff = (model(x, ts, ctx) - per_frame_t2i(unet, x, ts, ctx)).abs().max()
    assert diff <= 1e-5


@pytest.mark.parametrize("down", [(True, True), (True, False), (False, True)])
def test_constant_video_gives_t2i_output_per_frame(down):
    """Nearest-neighbour resampling at init: a temporally constant video is processed as its single frame."""
    unet = three_level_unet()
    model = inflate(unet, temporal_cfg(down))
    x, ts, ctx = inputs(unet, 2, 1)
    video = x.expand(-1, -1, 8, -1, -1).contiguous()
    with torch.no_grad():
        out = model(video, ts, ctx)
        ref = unet(x[:, :, 0], ts, ctx)
    assert (out - ref[:, :, None]).abs().max() <= 1e-5


def test_inflation_is_not_per_frame_for_moving_video():
    """Guards the two tests above: with temporal resampling a non-constant video is NOT processed per frame."""
    unet = three_level_unet()
    model = inflate(unet, temporal_cfg((True, True)))
    x, ts, ctx = inputs(unet, 1, 8)
    with torch.no_grad():
        assert (model(x, ts, ctx) - per_frame_t2i(unet, x, ts, ctx)).abs().max() > 1e-3


def test_new_blocks_zero_init_and_resampling_identity():
    model = inflate(three_level_unet(), temporal_cfg((True, True)))
    blocks = [m for m in model.modules() if isinstance(m, (ConvInflationBlock, AttentionInflationBlock))]
    # per level: 1 down + 2 up blocks, 3 levels, + mid
    assert len(blocks) == 3 * 3 + 1
    for blk in blocks:
        for p in blk.proj_out.parameters():
            assert torch.count_nonzero(p) == 0
    resamplers = [m for m in model.modules() if isinstance(m, (TemporalDownsample, TemporalUpsample))]
    assert len(resamplers) == 4
    for r in resamplers:
        w = r.conv.weight
        k = w.shape[-1]
        assert torch.equal(w[:, :, k // 2], torch.eye(w.shape[0]))
        assert torch.count_nonzero(w) == w.shape[0] and torch.count_nonzero(r.conv.bias) == 0


def test_each_new_block_is_identity_at_init():
    h = torch.randn(2 * 4, 8, 4, 4)
    emb, ctx = torch.randn(2, 32), torch.randn(2, 3, 16)
    for blk in (ConvInflationBlock(8, 32), AttentionInflationBlock(8, 32, 16, 2, 8, "temporal"),
                AttentionInflationBlock(8, 32, 16, 2, 8, "spacetime")):
        assert torch.equal(blk(h, emb, ctx, frames=4), h)


def test_freeze_t2i():
    unet = three_level_unet()
    model = inflate(unet, temporal_cfg((True, True)))
    n_unet = sum(p.numel() for p in unet.parameters())
    n_temporal = sum(p.numel() for p in model.temporal_parameters())
    counts = freeze_t2i(model)
    assert counts == {"trainable": n_temporal, "frozen": n_unet, "total": n_unet + n_temporal}
    assert not any(p.requires_grad for p in unet.parameters())
    assert all(p.requires_grad for p in model.temporal_parameters())
    n_in = sum(p.numel() for p in unet.conv_in.parameters())
    counts = freeze_t2i(model, train_input_conv=True)
    assert counts["trainable"] == n_temporal + n_in
    trainable_unet = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable_unet == {"conv_in.weight", "conv_in.bias"}


def test_bad_frame_count_and_size_are_value_errors():
    unet = three_level_unet()
    model = inflate(unet, temporal_cfg((True, True)))
    ts, ctx = torch.rand(1), torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match=r"num_frames: expected a positive multiple of 4.*got 6"):
        model(torch.randn(1, 3, 6, 16, 16), ts, ctx)
    with pytest.raises(ValueError, match=r"height: expected a multiple of 4.*got 10"):
        model(torch.randn(1, 3, 8, 10, 16), ts, ctx)
    with pytest.raises(ValueError, match=r"width: expected a multiple of 4.*got 14"):
        model(torch.randn(1, 3, 8, 16, 14), ts, ctx)
    one_down = inflate(three_level_unet(), temporal_cfg((False, True)))
    with pytest.raises(ValueError, match=r"num_frames: expected a positive multiple of 2.*got 5"):
        one_down(torch.randn(1, 3, 5, 16, 16), ts, ctx)
    with pytest.raises(ValueError, match="temporal_down"):
        inflate(three_level_unet(), temporal_cfg((True,)))


def test_widen_input_keeps_outputs():
    unet = three_level_unet(in_channels=3)
    x, ts, ctx = inputs(unet, 2, 1)
    x = x[:, :, 0]
    with torch.no_grad():
        before = unet(x, ts, ctx)
        widen_input(unet, 7)
        after = unet(torch.cat([x, torch.zeros(2, 4, 16, 16)], dim=1), ts, ctx)
        moved = unet(torch.cat([x, torch.ones(2, 4, 16, 16)], dim=1), ts, ctx)
    assert unet.conv_in.in_channels == 7 and unet.cfg.in_channels == 7
    assert torch.count_nonzero(unet.conv_in.weight[:, 3:]) == 0
    assert (after - before).abs().max() <= 1e-6
    assert torch.equal(moved, after)  # zero-initialized: C and M have no effect until trained
    with pytest.raises(ValueError, match="in_channels"):
        widen_input(unet, 3)


# ---------------------------------------------------------------- presets


def test_paper_preset_meta_forward():
    cfg = get_preset("paper")
    with torch.device("meta"):
        model = build_model(cfg)
        out = model(torch.empty(1, 7, 80, 128, 128), torch.empty(1), torch.empty(1, 128, 4096))
    assert isinstance(model, STUNet) and model.frame_multiple == 16
    assert out.shape == (1, 3, 80, 128, 128) and out.device.type == "meta"


def test_tiny_preset_is_small_and_runs():
    cfg = get_preset("tiny")
    bundle = build_bundle(cfg)
    n = sum(p.numel() for p in bundle.model.parameters()) + sum(p.numel() for p in bundle.text_encoder.parameters())
    assert n < 1_000_000
    x = torch.randn(1, 7, cfg.num_frames, cfg.resolution, cfg.resolution)
    with torch.no_grad():
        out = bundle.model(x, torch.rand(1), bundle.text_encoder.encode("a cat"))
    assert out.shape == (1, 3, cfg.num_frames, cfg.resolution, cfg.resolution)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_consistent(name):
    cfg = get_preset(name)
    assert cfg.num_frames % 2 ** sum(cfg.temporal.temporal_down) == 0
    assert cfg.resolution % 2 ** (cfg.unet.num_levels - 1) == 0
    assert cfg.unet.in_channels == 3 + cfg.cond_channels
    assert cfg.text.width == cfg.unet.context_dim
    assert get_preset(name) is not get_preset(name)
    with pytest.raises(ValueError, match="preset"):
        get_preset("huge")
