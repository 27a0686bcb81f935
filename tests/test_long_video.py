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
                                choose=lambda t0, t1: const[segment_at(schedule, (t0 + t1 - 1) // 2)])
    out = md(torch.zeros(1, 3, 32, 2, 2), torch.tensor(1.0))[0, 0, :, 0, 0]
    assert out[:10].max() == 0 and out[22:].min() == 1
    assert torch.all(out[1:] >= out[:-1]) and 0 < out[14:18].mean() < 1


def test_long_generation_runs_with_a_schedule_and_bounded_memory(tiny):
    from lumiere.bench import peak_bytes
    kw = dict(window=8, overlap=4, steps=2, seed=1)
    schedule = "0: a red circle moving left; 16: a blue circle moving right"
    video = generate_long(tiny, schedule, 32, **kw)
    assert video.shape == (1, 3, 32, 16, 16) and torch.isfinite(video).all()
    assert not torch.equal(video, generate_long(tiny, "a red circle moving left", 32, **kw))
    peaks = [peak_bytes(lambda n=n: generate_long(tiny, schedule, n, **kw)) for n in (32, 128)]
    assert peaks[1] < 2 * peaks[0], peaks  # 4x the frames, not 4x the memory: one window at a time
