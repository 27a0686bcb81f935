"""Temporal MultiDiffusion: window cover, fusion (flat / ramped), single-window identity, bounded memory, tiles."""
import dataclasses

import pytest
import torch

from lumiere.checkpoint import build_bundle
from lumiere.configs import get_preset
from lumiere.diffusion.denoiser import Denoiser
from lumiere.diffusion.samplers import get_sigmas, sample
from lumiere.multidiffusion import MultiDiffusionDenoiser, resolve_window, window_starts, window_weights
from lumiere.pipeline import upscale


def test_windows_cover_every_frame():
    for length in range(1, 60):
        for window in range(1, 40):
            for overlap in range(2, min(window, 9)):
                starts = window_starts(length, window, overlap)
                if window >= length:
                    assert starts == [0]
                    continue
                assert starts[0] == 0 and starts[-1] == length - window  # last window aligned to the end
                assert all(0 <= s <= length - window for s in starts)
                covered = set().union(*(range(s, s + window) for s in starts))
                assert covered == set(range(length))
                gaps = [b - a for a, b in zip(starts, starts[1:])]
                assert all(0 < g <= window - overlap for g in gaps)  # consecutive windows share >= overlap frames
                assert all(g == window - overlap for g in gaps[:-1])  # evenly strided except the last


def test_window_errors():
    with pytest.raises(ValueError, match="overlap: expected 2 <= overlap"):
        window_starts(20, 8, 1)
    with pytest.raises(ValueError, match="overlap"):
        window_starts(20, 8, 8)
    with pytest.raises(ValueError, match="window"):
        window_starts(20, 0, 2)
    with pytest.raises(ValueError, match="length"):
        window_starts(0, 8, 2)
    with pytest.raises(ValueError, match="fuse"):
        MultiDiffusionDenoiser(lambda x, s, cond=None: x, 8, fuse="max")
    with pytest.raises(ValueError, match="fuse"):
        window_weights(8, 2, "max", True, True)


def test_one_window_convention():
    """0 / None = the model's frames and half the window; a loop's window is at most the clip; the overlap is
    checked only where windows overlap; the network's frame check names the window, or the clip it covers."""
    assert resolve_window(64, 0, 0, 16) == resolve_window(64, None, None, 16) == (16, 8)
    assert resolve_window(64, 8, 3, 16) == (8, 3)
    assert resolve_window(12, 0, 0, 16, loop=True) == (12, 6)
    assert resolve_window(12, 0, 1, 16) == (16, 1)  # one window covers the clip: no overlap is used
    with pytest.raises(ValueError, match=r"^overlap: expected 2 <= overlap < window \(12\), got 1$"):
        resolve_window(12, 0, 1, 16, loop=True)
    with pytest.raises(ValueError, match=r"^overlap: expected 2 <= overlap < window \(8\), got 8$"):
        resolve_window(64, 8, 8, 16)
    with pytest.raises(ValueError, match=r"^window: expected >= 1 frames"):
        resolve_window(64, -8, 0, 16)
    seen = []
    resolve_window(64, 0, 0, 16, check=lambda frames, name: seen.append((frames, name)))
    resolve_window(10, 0, 0, 16, check=lambda frames, name: seen.append((frames, name)), name="latent")
    assert seen == [(16, "window"), (10, "latent")]

    def multiple_of_4(frames, name):
        if frames % 4:
            raise ValueError(f"{name}: expected a multiple of 4, got {frames}")

    with pytest.raises(ValueError, match="^window: "):  # a bad window is named before the overlap it implies
        resolve_window(64, 3, 0, 16, check=multiple_of_4)


def test_ramped_weights():
    w = window_weights(8, 3, "ramped", first=False, last=False)
    torch.testing.assert_close(w, torch.tensor([.25, .5, .75, 1, 1, .75, .5, .25]))
    assert torch.equal(window_weights(8, 3, "ramped", first=True, last=False)[:3], torch.ones(3))
    assert torch.equal(window_weights(8, 3, "ramped", first=False, last=True)[-3:], torch.ones(3))
    assert torch.equal(window_weights(8, 3, "flat", first=False, last=False), torch.ones(8))


class WindowProbe:
    """A denoiser whose prediction depends on the position inside the window it is given (x + position), and
    that records the largest window it sees."""

    def __init__(self):
        self.max_frames, self.calls, self.max_hw = 0, 0, (0, 0)

    def __call__(self, x, s, cond=None):
        self.calls += 1
        self.max_frames = max(self.max_frames, x.shape[2])
        self.max_hw = tuple(max(a, b) for a, b in zip(self.max_hw, x.shape[-2:]))
        if cond is not None:
            assert cond.shape[2:] == x.shape[2:]  # cond is sliced with x
        return x + torch.arange(x.shape[2], dtype=x.dtype)[:, None, None]


@pytest.mark.parametrize("fuse", ["flat", "ramped"])
@pytest.mark.parametrize("length,window,overlap", [(20, 8, 2), (17, 6, 3), (80, 16, 2)])
def test_fusion_averages_the_windows_covering_each_frame(fuse, length, window, overlap):
    """Each window predicts x + the position in the window, so the fused out - x = f - g(f) where g(f) is an
    average of the starts of the windows covering frame f: that start where one window covers f; flat: their plain
    mean (the paper's least-squares solution); ramped: strictly between the covering starts. And g never goes
    back: across an overlap the later window takes over (ramped: gradually)."""
    x = torch.randn(1, 2, length, 3, 3)
    out = MultiDiffusionDenoiser(WindowProbe(), window, overlap, fuse)(x, torch.tensor(1.0))
    shift = (out - x)[0, 0, :, 0, 0]  # (length,): the same for every channel and pixel
    torch.testing.assert_close(out - x, shift[None, None, :, None, None].expand_as(x), atol=1e-5, rtol=0)
    g = torch.arange(length) - shift
    starts = window_starts(length, window, overlap)
    for f in range(length):
        covering = [s for s in starts if s <= f < s + window]
        if len(covering) == 1 or fuse == "flat":
            assert abs(g[f] - sum(covering) / len(covering)) < 1e-4, (f, covering, g[f])
        else:
            assert min(covering) < g[f] < max(covering), (f, covering, g[f])
            entering = f > 0 and not any(s <= f - 1 < s + window for s in covering[1:])
            if entering:  # the first frame a later window covers: it has only begun to fade in
                assert g[f] < sum(covering) / len(covering), (f, covering, g[f])
    assert (g[1:] - g[:-1] >= -1e-4).all(), g


def test_memory_bounded_by_one_window():
    probe = WindowProbe()
    cond = torch.randn(1, 3, 80, 4, 4)
    md = MultiDiffusionDenoiser(probe, 16, 2, cond=cond)
    sample(md, (1, 3, 80, 4, 4), get_sigmas("uniform", 3, 0.002, 160.0), "euler")
    assert probe.max_frames == 16
    assert probe.calls == 3 * len(window_starts(80, 16, 2))


@pytest.mark.parametrize("fuse", ["flat", "ramped"])
def test_framewise_denoiser_is_unchanged_by_windows_and_tiles(fuse):
    """A denoiser without temporal or spatial interaction gives the same result however the clip is cut."""
    framewise = lambda x, s, cond=None: torch.tanh(x) * 0.5 + (0 if cond is None else cond)  # noqa: E731
    x, cond = torch.randn(2, 3, 23, 20, 20), torch.randn(2, 3, 23, 20, 20)
    plain = framewise(x, 1.0, cond)
    windowed = MultiDiffusionDenoiser(framewise, 7, 3, fuse, tile=8, tile_overlap=2, cond=cond)(x, 1.0)
    torch.testing.assert_close(windowed, plain, atol=1e-6, rtol=0)


def test_spatial_tiles_bound_the_frame_size():
    probe = WindowProbe()
    md = MultiDiffusionDenoiser(probe, 4, 2, tile=8, tile_overlap=2)
    tiles = list(md.windows((1, 3, 10, 20, 20)))
    covered = torch.zeros(10, 20, 20)
    for frames, y0, y1, x0, x1, w in tiles:
        covered[frames, y0:y1, x0:x1] += 1
        assert w.shape == (len(frames), y1 - y0, x1 - x0)
    assert (covered >= 1).all()
    md(torch.randn(1, 3, 10, 20, 20), 1.0)
    assert probe.max_frames == 4 and probe.max_hw == (8, 8)


def _tiny_denoiser():
    torch.manual_seed(0)
    bundle = build_bundle(get_preset("tiny"))
    te = bundle.text_encoder
    cond = torch.randn(1, 4, 8, 16, 16)
    return Denoiser(bundle.model, te.encode("a cat"), te.encode(""), cond, cfg_scale=2.0)


@pytest.mark.parametrize("window", [8, 12])
def test_single_window_equals_plain_denoiser_bitwise(window):
    d = _tiny_denoiser()
    x = 5 * torch.randn(1, 3, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(MultiDiffusionDenoiser(d, window, 2)(x, torch.tensor(5.0)), d(x, torch.tensor(5.0)))
    sig = get_sigmas("karras", 3, 0.002, 160.0)
    assert torch.equal(sample(MultiDiffusionDenoiser(d, window, 2), x.shape, sig, "dpmpp_2m", seed=1),
                       sample(d, x.shape, sig, "dpmpp_2m", seed=1))


def test_windows_on_a_real_model():
    d = _tiny_denoiser()
    x = 5 * torch.randn(1, 3, 8, 16, 16)
    with torch.no_grad():
        out = MultiDiffusionDenoiser(d, 4, 2, "ramped")(x, torch.tensor(5.0))
    assert out.shape == x.shape and torch.isfinite(out).all()


def tiny_ssr_bundle():
    """A seeded random-weight x2 SSR on the tiny preset."""
    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, role="ssr", conditioning="lowres", scale=2,
                              unet=dataclasses.replace(cfg.unet, in_channels=6))
    torch.manual_seed(0)
    return build_bundle(cfg)


def test_upscale_pipeline_windows():
    bundle = tiny_ssr_bundle()
    low = torch.rand(1, 3, 10, 8, 8) * 2 - 1
    out = upscale(bundle, low, "a cat", window=4, overlap=2, steps=2)
    assert out.shape == (1, 3, 10, 16, 16)
    with pytest.raises(ValueError, match="window: expected a positive multiple of 2 frames"):
        upscale(bundle, low, "a cat", window=5, overlap=2, steps=2)


def test_upscale_denoise_starts_from_the_upsampled_clip():
    """denoise < 1 (SDEdit start): a small denoise stays near the bilinear up-sampling, 1 (pure noise) does not;
    the default is the shipped start SSR_DENOISE; out-of-range values name the argument."""
    from lumiere.pipeline import SSR_DENOISE, upsample_video
    bundle = tiny_ssr_bundle()
    low = torch.rand(1, 3, 4, 8, 8) * 2 - 1
    bilinear = upsample_video(low, 2)
    kw = dict(window=4, overlap=2, steps=20, seed=1)
    light, full = upscale(bundle, low, "a cat", denoise=0.05, **kw), upscale(bundle, low, "a cat", denoise=1.0, **kw)
    assert (light - bilinear).abs().mean() < 0.03 < 0.1 < (full - bilinear).abs().mean()
    assert torch.equal(upscale(bundle, low, "a cat", **kw), upscale(bundle, low, "a cat", denoise=SSR_DENOISE, **kw))
    assert 0 < SSR_DENOISE <= 1
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="denoise"):
            upscale(bundle, low, "a cat", denoise=bad, **kw)
