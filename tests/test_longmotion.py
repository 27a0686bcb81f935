"""Motion that needs the whole clip (issue 19): captions, held-out splits, periods, keyframe sub-sampling, the
training stage's mixture and fixed keyframe stride, the temporal cascade and the eval's whole-clip readers."""
import math
import shutil

import pytest
import torch

from lumiere.cascade import generate_cascade
from lumiere.checkpoint import build_bundle, load_model
from lumiere.configs import get_preset
from lumiere.data.longmotion import (EVENTS, LONG_VOCAB, PERIOD_SECONDS, PERIODIC_MOTIONS, TEMPOS, LongMotionClips,
                                     event_combos, heldout_events, heldout_periodic, long_caption, periodic_combos)
from lumiere.data.procedural import VOCAB
from lumiere.eval import (BASE, CASCADE_KEYFRAMES, CASCADE_TSR, LONG80, evaluate, whole_clip_figures,
                          whole_clip_specs)
from lumiere.models.text import split_words
from lumiere.pipeline import generate
from lumiere.train.stages import build_stage, make_dataset
from lumiere.train.spec import DataSpec
from lumiere.train.trainer import Trainer


def centroid_track(video: torch.Tensor) -> torch.Tensor:
    """(3, t, h, w) in -1..1 over a black background -> (t, 2) centroid (x, y) px of the object."""
    w = ((video + 1) / 2).sum(0).clamp(min=0)  # (t, h, w) coverage-weighted (anti-aliased edges count)
    t, h, wd = w.shape
    xs = torch.arange(wd, dtype=torch.float32) + 0.5
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    total = w.sum((1, 2)).clamp(min=1e-6)
    return torch.stack([(w.sum(1) * xs).sum(1) / total, (w.sum(2) * ys).sum(1) / total], dim=-1)


def test_captions_fit_the_text_encoder_and_use_known_words():
    d = LongMotionClips(split="all")
    _, caps, specs = d.clips(64, torch.Generator().manual_seed(0), frames=4)
    for c, s in zip(caps, specs):
        words = split_words(c)
        assert len(words) <= 7, c
        assert all(w in VOCAB or w in LONG_VOCAB for w in words), c
        assert long_caption(s) == c


def test_heldout_combos_never_drawn_for_training_and_every_word_seen():
    for held, combos in ((heldout_periodic(), periodic_combos), (heldout_events(), event_combos)):
        assert len(set(held)) == len(held)
        train = combos("train")
        assert not set(held) & set(train)
        assert len(train) + len(held) == len(combos("all"))
    d = LongMotionClips(split="train")
    _, caps, _ = d.clips(400, torch.Generator().manual_seed(1), frames=2)
    held = {long_caption(dict(colour=c, shape=s, motion=m, tempo=t, background="black"))[:-len("black")]
            for c, s, m, t in heldout_periodic()}
    held |= {long_caption(dict(colour=c, shape=s, event=e, direction=d, background="black"))[:-len("black")]
             for c, s, e, d in heldout_events()}
    assert not any(c.rsplit(" ", 1)[0] + " " in held for c in caps)
    seen = {w for c in caps for w in split_words(c)}
    assert set(PERIODIC_MOTIONS + TEMPOS + EVENTS) <= seen


def test_keyframe_clips_are_every_4th_frame_of_the_same_motion():
    a, ca, _ = LongMotionClips(frames=80, fps=16).clips(6, torch.Generator().manual_seed(3))
    b, cb, _ = LongMotionClips(frames=20, fps=4).clips(6, torch.Generator().manual_seed(3))
    assert a.shape == (6, 3, 80, 32, 32) and b.shape == (6, 3, 20, 32, 32)
    assert ca == cb
    assert torch.equal(a[:, :, ::4], b)


def test_a_periodic_clip_repeats_with_its_tempos_period():
    d = LongMotionClips(frames=80, fps=16, split="all", backgrounds=("black",))
    for motion in PERIODIC_MOTIONS:
        for tempo in TEMPOS:
            spec = dict(colour="yellow", shape="circle", motion=motion, tempo=tempo,
                        background="black")
            v = d.render_specs([spec], torch.Generator().manual_seed(5))[0]
            p = round(PERIOD_SECONDS[tempo] * 16)
            track = centroid_track(v)
            assert (track[p:] - track[:-p]).abs().max() < 0.3, (motion, tempo)  # repeats after one period
            assert (track[p // 2:] - track[:-(p // 2)]).abs().max() > 2.0, (motion, tempo)  # not before


def test_events_span_the_whole_motion_at_constant_speed():
    d = LongMotionClips(frames=80, fps=16, split="all", backgrounds=("black",))
    for event in EVENTS:
        spec = dict(colour="yellow", shape="square", event=event, direction="right", background="black")
        x = centroid_track(d.render_specs([spec], torch.Generator().manual_seed(7))[0])[:, 0]
        step = x[1:] - x[:-1]
        if event == "crosses":
            tt = torch.arange(80, dtype=torch.float32)
            slope = float(((tt - tt.mean()) * (x - x.mean())).sum() / ((tt - tt.mean()) ** 2).sum())
            fit = x.mean() + slope * (tt - tt.mean())
            assert slope > 0.15 and (x - fit).abs().max() < 0.5  # constant speed (2x super-sampled edges)
            assert (step > 0).all()
            assert x[-1] - x[0] > 15  # wall to wall at 32 px
        else:
            turn = int(x.argmax())
            assert 38 <= turn <= 41 and abs(float(x[-1] - x[0])) < 1.0


def test_tsr_windows_are_windows_of_the_long_motion():
    d = LongMotionClips(frames=16, fps=16, periodic=0.0)  # events: a window of a 5 s crossing moves slowly
    v, _, specs = d.clips(16, torch.Generator().manual_seed(2))
    for clip, s in zip(v, specs):
        if s["event"] == "crosses" and s["background"] == "black":
            x = centroid_track(clip)
            assert (x[-1] - x[0]).norm() < 6.0  # ~ 1/5 of the ~20 px path


def test_stage_mixes_long_motion_and_keeps_a_fixed_keyframe_stride(tmp_path):
    ds = make_dataset(DataSpec(long_motion=0.5), 16, 32, 16)
    _, caps, _ = ds.clips(32, torch.Generator().manual_seed(0))
    assert any("moving" in c for c in caps) and any("moving" not in c for c in caps)
    spec = {"stage": "conditioning", "preset": "tiny", "init": "", "data": {"long_motion": 0.5},
            "tasks": {"keyframes": 1.0}, "keyframe_stride": 4, "batch_size": 8, "seed": 0,
            "model": {"num_frames": 16, "fps": 16}}
    t2i = get_preset("tiny")
    t2i.temporal, t2i.role, t2i.conditioning = None, "t2i", "none"
    t2i.unet.in_channels = 3
    t2i.text.vocab = tuple(VOCAB)
    stage = build_stage(spec, init_bundle=build_bundle(t2i))
    assert set(LONG_VOCAB) <= set(stage.bundle.config.text.vocab)
    assert set(LONG_VOCAB) <= set(stage.bundle.text_encoder.tokenizer.index)
    x0, _, _ = stage.data.clips(8, torch.Generator().manual_seed(1))
    cond = stage.make_cond(x0, torch.Generator().manual_seed(2))
    known = cond[:, 3, :, 0, 0]  # (b, t) the mask M
    for row in known:
        idx = row.nonzero().flatten().tolist()
        assert len(idx) == 4 and idx[0] in range(4) and all(b - a == 4 for a, b in zip(idx, idx[1:]))
    assert math.isfinite(float(stage.loss(torch.Generator().manual_seed(3))))


def test_whole_clip_readers_on_the_ground_truth_and_on_keyframes_filled_in():
    specs = [s for s in whole_clip_specs(1) if s.get("tempo") == "fast" or s.get("event")][:14]
    gt = LongMotionClips(frames=80, fps=16, split="all").render_specs(specs, torch.Generator().manual_seed(0))
    f = whole_clip_figures(gt, specs, gt)  # the readers are right on the ground truth
    assert f["period_error"] < 0.02 and f["aliased_clips"] == 0 and f["jump_rate"] == 0
    assert f["identity_acc"] == 1.0 and f["direction_acc"] == 1.0 and f["speed_cv"] < 0.05
    # keyframes at 4 fps held for 4 frames each (a cascade that fills nothing in): fast motion is aliased
    held = gt[:, :, torch.arange(80) // 4 * 4]
    h = whole_clip_figures(held, specs, gt)
    assert h["period_error_by_tempo"]["fast"] > 0.5
    orbits = [s for s in specs if s.get("motion") == "orbits"]
    assert orbits and h["aliased_clips"] >= len(orbits)  # a fast orbit seen through keyframes turns backwards


def test_cascade_keeps_its_keyframes_and_the_whole_clip_section_runs(tmp_path):
    runs = tmp_path / "runs"
    tiny = {"preset": "tiny", "batch_size": 2, "threads": 1, "seed": 0, "checkpoint_minutes": 1000,
            "data": {"long_motion": 0.5}}
    Trainer({**tiny, "stage": "t2i"}, out=runs / "t2i", max_steps=1, quiet=True).run()
    Trainer({**tiny, "stage": "conditioning", "init": str(runs / "t2i" / "model.safetensors"),
             "tasks": {"text": 1.0}}, out=runs / "base", max_steps=1, quiet=True).run()
    models = tmp_path / "models"
    models.mkdir()
    for name in (BASE, LONG80, CASCADE_KEYFRAMES, CASCADE_TSR):  # the tiny base in every role; no WINDOWS16
        shutil.copy(runs / "base" / "model.safetensors", models / name)
    b = load_model(models / BASE)
    prompt = "a red circle orbits fast on black"
    v = generate_cascade(b, b, prompt, 16, stride=4, steps=2, seed=3)  # the tiny base's window: 8 frames
    keys = generate(b, prompt, num_frames=4, steps=2, seed=3)
    assert v.shape == (1, 3, 16, 16, 16) and torch.equal(v[:, :, ::4], keys)
    res = evaluate(models, quick=True, sections=("whole_clip",), threads=1, log=lambda m: None)
    wc = res["whole_clip"]
    assert wc["ground_truth"]["aliased_clips"] == 0 and wc["windows_model"] == BASE  # windows: the base's
    for m in ("stunet80", "cascade", "multidiffusion", "extension"):
        assert wc[m]["clips"] == 4 and 0 <= wc[m]["jump_rate"] <= 1 and wc[m]["gflops_per_clip"] > 0
    assert wc["cascade"]["gflops_per_clip"] > wc["stunet80"]["gflops_per_clip"]  # 20 keyframes + 80 TSR frames
    assert "whole_clip_period_error" in res["summary"] and "whole_clip_jump_rate" in res["met"]


def test_whole_clip_subset_is_balanced_and_the_default_is_the_full_set():
    full = whole_clip_specs(1)
    assert len(full) == len(heldout_periodic()) + len(heldout_events())
    sub = whole_clip_specs(1, 6, 2)  # the eval's --whole-clip-clips 6 2
    per, ev = [s for s in sub if "tempo" in s], [s for s in sub if "event" in s]
    assert len(per) == 6 and len(ev) == 2 and all(s in full for s in sub)
    assert sorted(s["tempo"] for s in per) == sorted(TEMPOS * 2)  # each tempo twice
    assert set(s["motion"] for s in per) == set(PERIODIC_MOTIONS)  # every motion
    assert set(s["event"] for s in ev) == set(EVENTS) and len(set(s["direction"] for s in ev)) == 2
    assert whole_clip_specs(1, 24, 16) and sorted(map(str, whole_clip_specs(1, 24, 16))) == sorted(map(str, full))


def test_short_clips_mix_short_steps_at_the_datas_own_speed():
    """short_clips: that fraction of steps trains on short_frames-frame clips without long motion (every caption
    the plain shapes'), the rest on the long clips; a bad fraction or frame count is refused by name."""
    spec = {"stage": "conditioning", "preset": "tiny", "init": "", "data": {"long_motion": 0.5},
            "tasks": {"text": 1.0}, "batch_size": 2, "seed": 0, "short_clips": 0.5, "short_frames": 8,
            "model": {"num_frames": 16, "fps": 16}}
    t2i = get_preset("tiny")
    t2i.temporal, t2i.role, t2i.conditioning = None, "t2i", "none"
    t2i.unet.in_channels = 3
    t2i.text.vocab = tuple(VOCAB)
    stage = build_stage(spec, init_bundle=build_bundle(t2i))
    x, caps, _ = stage.short_data.clips(16, torch.Generator().manual_seed(0))
    assert x.shape[2] == 8 and not any(w in c for c in caps for w in ("swings", "bobs", "orbits", "crosses"))
    frames = []
    hook = stage.bundle.model.register_forward_pre_hook(lambda m, a: frames.append(a[0].shape[2]))
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        stage.loss(g)
    hook.remove()
    assert set(frames) == {8, 16} and 2 <= frames.count(8) <= 10, frames
    for bad, match in (({"short_clips": 1.0}, "short_clips: expected a fraction between 0 and 1, got 1.0"),
                       ({"short_frames": 7}, "short_frames: expected a positive multiple of 2")):
        with pytest.raises(ValueError, match=match):
            build_stage({**spec, **bad}, init_bundle=build_bundle(t2i))
