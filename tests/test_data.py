import torch

from lumiere.data.folder import FolderDataset, decode_video
from lumiere.data.procedural import (VOCAB, ProceduralClips, caption, heldout_combos, train_combos)
from lumiere.metrics import analyse
from lumiere.models.text import UNK, WordTokenizer


def test_split_is_disjoint_and_balanced():
    held, train = set(heldout_combos()), set(train_combos())
    assert len(held) == 12 and len(train) == 60 and not held & train
    from collections import Counter
    assert set(Counter(c for c, _, _ in held).values()) == {2}
    assert set(Counter(s for _, s, _ in held).values()) == {4}
    assert set(Counter(d for _, _, d in held).values()) == {3}


def test_training_batches_never_contain_heldout_combos():
    data = ProceduralClips(size=16, frames=4, split="train")
    specs = data.sample_specs(500, torch.Generator().manual_seed(0))
    held = set(heldout_combos())
    assert not any((s["colour"], s["shape"], s["direction"]) in held for s in specs)


def test_seeded_and_deterministic():
    data = ProceduralClips()
    a = data.clips(4, torch.Generator().manual_seed(3))
    b = data.clips(4, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert a[0].shape == (4, 3, 16, 32, 32) and a[0].min() >= -1 and a[0].max() <= 1
    img, caps, _ = data.images(5, torch.Generator().manual_seed(1))
    assert img.shape == (5, 3, 32, 32) and len(caps) == 5


def test_captions_fit_the_tokenizer():
    tok = WordTokenizer(VOCAB, 8)
    ids = tok(caption("magenta", "triangle", "down", "white"))
    assert UNK not in ids and len(ids) == 8


def test_metrics_read_ground_truth_correctly():
    data = ProceduralClips(split="all")
    video, _, specs = data.clips(48, torch.Generator().manual_seed(0))
    res = [analyse(v) for v in video]
    for key in ("colour", "shape", "direction"):
        acc = sum(r[key] == s[key] for r, s in zip(res, specs)) / len(specs)
        assert acc >= (0.9 if key == "shape" else 1.0), (key, acc)
    assert all(r["travel"] >= 7 for r in res)  # >= ~1 px/frame over the first 8 frames (the no-bounce cap)


def _centroid_path(clip):
    """Per-frame centroid (x, y) of the non-background pixels of one clip (3, t, h, w)."""
    v = (clip + 1) / 2
    bg = v[:, :, 0, 0][:, :, None, None]
    mask = ((v - bg).abs().amax(0) > 0.3).float()  # (t, h, w)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    area = mask.sum((1, 2))
    return torch.stack([(mask * xs).sum((1, 2)) / area, (mask * ys).sum((1, 2)) / area], -1)


def test_default_clips_never_bounce_and_bounce_true_reverses():
    from lumiere.data.procedural import DIR_VEC
    gen = torch.Generator().manual_seed(5)
    straight = ProceduralClips(split="all")
    specs = straight.sample_specs(32, gen)
    state = gen.get_state()
    for bounce, data in ((False, straight), (True, ProceduralClips(split="all", bounce=True))):
        gen.set_state(state)
        video = data.render_specs(specs, gen)
        reversed_clips = 0
        for clip, spec in zip(video, specs):
            along = (_centroid_path(clip) * torch.tensor(DIR_VEC[spec["direction"]])).sum(-1)  # signed progress
            steps = along[1:] - along[:-1]
            reversed_clips += bool((steps < -0.5).any())
            if not bounce:
                assert (steps > -0.25).all(), (spec, steps)  # one straight path, never back
        assert (reversed_clips == 0) if not bounce else (reversed_clips >= 8), (bounce, reversed_clips)


def _write_video(path, frames, fps, size=(40, 24), codec="mpeg4"):
    import av
    import numpy as np
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = size
        s.pix_fmt = "yuv420p" if codec != "gif" else "rgb8"
        for i in range(frames):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[:, : (i * 4) % size[0] + 4] = (200, 50, 50)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_folder_dataset_resamples_fps_size_and_length(tmp_path):
    _write_video(tmp_path / "a.mp4", frames=24, fps=24)
    (tmp_path / "a.txt").write_text("a red bar growing\n")
    _write_video(tmp_path / "b.mp4", frames=6, fps=12)  # short and uncaptioned: looped, empty caption
    v = decode_video(tmp_path / "a.mp4", fps=8, size=16)
    assert v.shape[0] == 3 and v.shape[2:] == (16, 16)
    assert v.shape[1] == 8  # 1 s at 24 fps -> 8 frames at 8 fps (t = 0 .. 0.875 s)
    ds = FolderDataset(tmp_path, frames=8, size=16, fps=8)
    assert len(ds) == 2 and ds.caption(0) == "a red bar growing" and ds.caption(1) == ""
    clips, caps, _ = ds.clips(3, torch.Generator().manual_seed(0))
    assert clips.shape == (3, 3, 8, 16, 16) and clips.min() >= -1 and clips.max() <= 1
    imgs, _, _ = ds.images(2, torch.Generator().manual_seed(0))
    assert imgs.shape == (2, 3, 16, 16)


def test_folder_dataset_errors(tmp_path):
    import pytest
    with pytest.raises(ValueError, match="no videos"):
        FolderDataset(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        FolderDataset(tmp_path / "missing")


def test_folder_dataset_workers_and_rank_shards(tmp_path):
    """Decoding threads give the same clips as decoding on demand (the draws depend only on the generator), and
    count no more waiting once everything is decoded; ranks read disjoint shards covering every file."""
    for k in range(4):
        _write_video(tmp_path / f"v{k}.mp4", frames=12 + 4 * k, fps=8)
    plain = FolderDataset(tmp_path, frames=8, size=16, fps=8)
    ahead = FolderDataset(tmp_path, frames=8, size=16, fps=8, workers=2)
    a, _, _ = plain.clips(6, torch.Generator().manual_seed(3))
    b, _, _ = ahead.clips(6, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    for i in range(len(ahead)):
        ahead.video(i)
    waited = ahead.wait_seconds
    ahead.clips(6, torch.Generator().manual_seed(4))
    assert ahead.wait_seconds == waited  # all cached: no more waiting
    shards = [FolderDataset(tmp_path, frames=8, size=16, fps=8, rank=r, world=2).files for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == plain.files
    import pytest
    with pytest.raises(ValueError, match="rank"):
        FolderDataset(tmp_path, rank=2, world=2)
    with pytest.raises(ValueError, match="data.workers"):
        FolderDataset(tmp_path, workers=-1)
