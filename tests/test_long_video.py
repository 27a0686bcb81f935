"""Long videos: temporal MultiDiffusion of the base over windows, with a prompt schedule (prompt travel)."""
import pytest
import torch

from lumiere.checkpoint import build_bundle
from lumiere.configs import get_preset
from lumiere.multidiffusion import MultiDiffusionDenoiser
from lumiere.pipeline import generate, generate_long, parse_prompt_schedule, segment_at


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg.text.vocab = ("a", "red", "blue", "circle", "moving", "left", "right")
    return build_bundle(cfg)


def test_prompt_schedule_parsing():
    assert parse_prompt_schedule("a red circle") == [(0, "a red circle")]
    assert parse_prompt_schedule("16: b; 0: a") == [(0, "a"), (16, "b")]
    assert parse_prompt_schedule([(0, "a"), (8, "b")]) == [(0, "a"), (8, "b")]
    for bad in ("4: a; 8: b", "0: a; 0: b", "0: a; b"):
        with pytest.raises(ValueError, match="prompt schedule"):
            parse_prompt_schedule(bad)
    schedule = [(0, "a"), (16, "b")]
    assert [segment_at(schedule, f) for f in (0, 15, 16, 40)] == [0, 0, 1, 1]


def test_one_window_equals_plain_generation(tiny):
    a = generate_long(tiny, "a red circle moving left", 8, steps=3, seed=4)
    b = generate(tiny, "a red circle moving left", num_frames=8, steps=3, seed=4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_windows_take_the_prompt_of_their_centre_and_overlaps_blend():
    """Two constant 'denoisers' (0 and 1) for two segments: the fused clip is 0 in the first, 1 in the second,
    and in between inside the overlap, rising monotonically with ramped fusion."""
    const = [lambda x, s, cond=None, v=v: torch.full_like(x, v) for v in (0.0, 1.0)]
    schedule = [(0, "a"), (16, "b")]
    md = MultiDiffusionDenoiser(const[0], window=8, overlap=4, fuse="ramped",
                                choose=lambda frames: const[segment_at(schedule, frames[(len(frames) - 1) // 2])])
    out = md(torch.zeros(1, 3, 32, 2, 2), torch.tensor(1.0))[0, 0, :, 0, 0]
    assert out[:10].max() == 0 and out[22:].min() == 1
    assert torch.all(out[1:] >= out[:-1]) and 0 < out[14:18].mean() < 1


def test_long_generation_runs_with_a_schedule_and_bounded_memory(tiny):
    from lumiere.memory import peak_bytes
    kw = dict(window=8, overlap=4, steps=2, seed=1)
    schedule = "0: a red circle moving left; 16: a blue circle moving right"
    video = generate_long(tiny, schedule, 32, **kw)
    assert video.shape == (1, 3, 32, 16, 16) and torch.isfinite(video).all()
    assert not torch.equal(video, generate_long(tiny, "a red circle moving left", 32, **kw))
    peaks = [peak_bytes(lambda n=n: generate_long(tiny, schedule, n, **kw)) for n in (32, 128)]
    assert peaks[1] < 2 * peaks[0], peaks  # 4x the frames, not 4x the memory: one window at a time


@pytest.mark.parametrize("length,window,overlap", [(16, 16, 8), (16, 8, 4), (40, 16, 8), (37, 16, 5)])
def test_loop_windows_cover_the_circle_with_overlaps(length, window, overlap):
    from lumiere.multidiffusion import loop_window_starts, time_windows
    starts = loop_window_starts(length, window, overlap)
    assert len(starts) >= 2 and starts[0] == 0
    for a, b in zip(starts, starts[1:] + [starts[0] + length]):
        assert 0 < b - a <= window - overlap  # consecutive windows (the last and the first too) share >= overlap
    covered = {f for frames, _ in time_windows(length, window, overlap, "ramped", loop=True) for f in frames}
    assert covered == set(range(length))
    # some window holds the seam: the last frame followed by the first
    assert any(any(x == length - 1 and y == 0 for x, y in zip(f, f[1:]))
               for f, _ in time_windows(length, window, overlap, "flat", loop=True))


def test_loop_denoiser_sees_the_seam_inside_a_window_and_reconciles():
    seen = []

    def record(x, s, cond=None):
        seen.append(x[0, 0, :, 0, 0].tolist())
        return x * 2

    x = torch.arange(16.0).view(1, 1, 16, 1, 1).expand(1, 3, 16, 2, 2).contiguous()
    cond = x + 100
    conds = []
    md = MultiDiffusionDenoiser(lambda x, s, cond=None: (conds.append(cond[0, 0, :, 0, 0].tolist()), x * 2)[1],
                                window=16, overlap=8, fuse="ramped", cond=cond, loop=True)
    torch.testing.assert_close(md(x, torch.tensor(1.0)), x * 2)  # a per-frame denoiser is reconciled exactly
    assert conds == [[100.0 + f for f in range(16)], [100.0 + f for f in list(range(8, 16)) + list(range(8))]]
    md = MultiDiffusionDenoiser(record, window=16, overlap=8, fuse="ramped", loop=True)
    md(x, torch.tensor(1.0))
    assert seen[1][7:9] == [15.0, 0.0]
    with pytest.raises(ValueError, match="window"):
        MultiDiffusionDenoiser(record, window=32, overlap=8, loop=True)(x, torch.tensor(1.0))


def test_loop_generation_runs(tiny):
    video = generate_long(tiny, "a red circle moving left", 8, loop=True, steps=2, seed=3)
    assert video.shape == (1, 3, 8, 16, 16) and torch.isfinite(video).all()
    assert not torch.equal(video, generate_long(tiny, "a red circle moving left", 8, steps=2, seed=3))


def test_repeated_extension_keeps_the_clip_and_reaches_any_length(tiny):
    from lumiere.pipeline import generate_extended
    kw = dict(steps=2, seed=5)
    start = generate(tiny, "a red circle moving left", num_frames=8, **kw)
    video = generate_extended(tiny, "0: a red circle moving left; 12: a blue circle moving right", 21,
                              clip=start, **kw)
    assert video.shape == (1, 3, 21, 16, 16) and torch.isfinite(video).all()
    torch.testing.assert_close(video[:, :, :8], start, rtol=0, atol=0)  # the given clip is kept
    fresh = generate_extended(tiny, "a red circle moving left", 20, context=2, **kw)
    assert fresh.shape[2] == 20
    with pytest.raises(ValueError, match="context"):
        generate_extended(tiny, "a red circle", 20, context=8, **kw)
    with pytest.raises(ValueError, match="num_frames"):
        generate_extended(tiny, "a red circle", 8, clip=start, **kw)


def test_keyframe_indices_parse_and_count_from_the_end():
    from lumiere.conditioning import keyframes, parse_indices
    assert parse_indices("0, 15") == [0, 15] and parse_indices("0 8 -1") == [0, 8, -1]
    with pytest.raises(ValueError, match="indices"):
        parse_indices("0, last")
    frames = torch.rand(1, 3, 2, 4, 4) * 2 - 1
    C, M = keyframes(frames, [0, -1], 8)
    assert M[0, 0, :, 0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    torch.testing.assert_close(C[:, :, 7], frames[:, :, 1])
    with pytest.raises(ValueError, match="indices"):
        keyframes(frames, [0, -8], 8)  # both are frame 0


def test_a_schedule_segment_past_the_clip_is_refused(tiny):
    with pytest.raises(ValueError, match=r"^prompt schedule: expected segments starting within the clip's 8 frames "
                                         r"\(0-7\), got start frame\(s\) \[8, 12\]"):
        generate_long(tiny, "0: a; 8: b; 12: c", 8, steps=1)


def test_ssr_on_a_clip_shorter_than_its_window_names_the_clip():
    import dataclasses

    from lumiere.pipeline import upscale

    cfg = dataclasses.replace(get_preset("tiny"), role="ssr", conditioning="lowres", scale=2, num_frames=4)
    cfg.unet.in_channels = 6
    ssr = build_bundle(cfg)
    with pytest.raises(ValueError, match=r"^video: expected a positive multiple of 2 frames .*got 1$"):
        upscale(ssr, torch.zeros(1, 3, 1, 8, 8), "", steps=1)
    with pytest.raises(ValueError, match=r"^window: expected a positive multiple of 2 frames .*got 3$"):
        upscale(ssr, torch.zeros(1, 3, 8, 8, 8), "", window=3, steps=1)
