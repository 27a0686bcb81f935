"""Camera-motion data over still images, the motion reader that measures it, and training on the mixture."""
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lumiere.checkpoint import load_model
from lumiere.data.camera import (CAMERA_MOTIONS, CAMERA_VOCAB, CONTENT_MOTION, CameraClips, MixedClips,
                                 camera_caption, camera_clips, image_files)
from lumiere.data.procedural import ProceduralClips
from lumiere.metrics import camera_figures, camera_motion
from lumiere.models.text import UNK, extend_vocab
from lumiere.train.stages import build_stage
from lumiere.train.trainer import Trainer
from test_train import TINY


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Three real image files (PNG, JPEG, a sub-folder), drawn with structure at every scale."""
    d = tmp_path_factory.mktemp("photos")
    g = torch.Generator().manual_seed(3)
    for i, (name, size) in enumerate((("a.png", (160, 120)), ("b.jpg", (90, 140)), ("sub/c.png", (200, 200)))):
        w, h = size
        low = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(h, w), mode="bicubic")
        high = torch.rand(1, 3, -(-h // 4), -(-w // 4), generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
        img = (0.7 * low + 0.3 * high[..., :h, :w]).clamp(0, 1)[0]
        (d / name).parent.mkdir(exist_ok=True)
        Image.fromarray((img.permute(1, 2, 0) * 255).byte().numpy()).save(d / name, quality=95)
    return d


def test_captions_and_image_files(tmp_path, photo_dir):
    assert camera_caption("left") == "the camera pans left" and camera_caption("in") == "the camera zooms in"
    with pytest.raises(ValueError, match="camera motion: expected one of"):
        camera_caption("sideways")
    assert [p.name for p in image_files(photo_dir)] == ["a.png", "b.jpg", "c.png"]
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="photos: expected images"):
        image_files(tmp_path)
    with pytest.raises(ValueError, match="photos: expected a folder of images"):
        image_files(tmp_path / "missing")


@pytest.mark.parametrize("photos", [False, True])
def test_clips_are_seeded_and_move_the_way_the_caption_says(photos, photo_dir):
    data = CameraClips(size=32, frames=16, photos=photo_dir if photos else None, textures=0.0)
    a = data.clips(12, torch.Generator().manual_seed(1))
    b = data.clips(12, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    video, caps, specs = a
    assert video.shape == (12, 3, 16, 32, 32) and video.min() >= -1 and video.max() <= 1
    assert all(c == camera_caption(s["camera"]) for c, s in zip(caps, specs))
    assert all((s["source"] != "texture") == photos for s in specs)
    # the reader, on every motion over every source: the content moves against the camera
    gt, _, gspecs = camera_clips(photo_dir if photos else None, 32, 16, seed=0)
    assert {s["camera"] for s in gspecs} == set(CAMERA_MOTIONS)
    reads = [camera_motion(v) for v in gt]
    assert all(r["motion"] == s["camera"] for r, s in zip(reads, gspecs)), [r["motion"] for r in reads]
    for r, s in zip(reads, gspecs):
        if s["camera"] in CONTENT_MOTION:
            dx, dy = CONTENT_MOTION[s["camera"]]
            assert r["shift_px"][0] * dx + r["shift_px"][1] * dy >= 8  # >= 8 px the way the content goes
    still = gt[:, :, :1].expand_as(gt).contiguous()
    assert all(camera_motion(v)["motion"] == "static" for v in still)
    figs = camera_figures(still, gt, gspecs)
    assert figs["direction_acc"] == 0 and figs["static"] == 1 and figs["frame0_psnr"] == 100.0
    assert figs["continuation_psnr"] == figs["still_frame_psnr"] < 25


def test_mixture_draws_from_each_source_by_weight():
    mix = MixedClips([(ProceduralClips(size=16, frames=4), 0.5), (CameraClips(size=16, frames=4), 0.5)])
    video, caps, specs = mix.clips(40, torch.Generator().manual_seed(0))
    camera = [s for s in specs if "camera" in s]
    assert video.shape == (40, 3, 4, 16, 16) and 8 <= len(camera) <= 32
    assert all(c.startswith("the camera") == ("camera" in s) for c, s in zip(caps, specs))
    with pytest.raises(ValueError, match="data mixture: expected positive weights"):
        MixedClips([(ProceduralClips(), 0.0)])


def test_extend_vocab_keeps_old_words_exactly(tmp_path):
    Trainer({**TINY, "stage": "t2i"}, out=tmp_path / "t2i", max_steps=1, quiet=True).run()
    te = load_model(tmp_path / "t2i" / "model.safetensors").text_encoder
    before = te.encode(["a red circle moving left on black", ""])
    assert UNK in te.tokenizer("the camera pans left")
    added = extend_vocab(te, CAMERA_VOCAB, torch.Generator().manual_seed(0))
    assert added == ["the", "camera", "pans", "zooms", "in", "out"]  # the directions are shapes words already
    assert UNK not in te.tokenizer("the camera zooms out") and UNK not in te.tokenizer("the camera pans down")
    assert torch.equal(te.encode(["a red circle moving left on black", ""]), before)
    assert not torch.allclose(te.encode("the camera zooms in"), te.encode("the camera zooms out"))
    assert extend_vocab(te, CAMERA_VOCAB, torch.Generator().manual_seed(0)) == []


def test_training_on_the_camera_mixture_resumes_exactly_and_ships_the_words(tmp_path, photo_dir):
    Trainer({**TINY, "stage": "t2i"}, out=tmp_path / "t2i", max_steps=1, quiet=True).run()
    spec = {**TINY, "stage": "conditioning", "init": str(tmp_path / "t2i" / "model.safetensors"),
            "data": {"kind": "procedural", "camera": 0.5, "photos": str(photo_dir), "textures": 0.5},
            "tasks": {"text": 1}, "camera_tasks": {"image_to_video": 1}}
    # the camera clips get their own task mixture: frame 0 known; the shape clips stay text-only
    stage = build_stage(spec)
    x0, _, specs = stage.data.clips(16, torch.Generator().manual_seed(0))
    M = stage.make_cond(x0, torch.Generator().manual_seed(0), specs)[:, 3:]  # (b, 1, t, h, w)
    for m, s in zip(M, specs):
        assert bool((m[:, 0] == 1).all() and (m[:, 1:] == 0).all()) if "camera" in s else bool((m == 0).all())
    Trainer(spec, out=tmp_path / "a", max_steps=4, quiet=True).run()
    Trainer(spec, out=tmp_path / "b", max_steps=2, quiet=True).run()
    Trainer(spec, out=tmp_path / "b", max_steps=4, resume=True, quiet=True).run()
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    bundle = load_model(tmp_path / "a" / "model.safetensors")
    assert UNK not in bundle.text_encoder.tokenizer("the camera pans up")
    log = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4
    with pytest.raises(ValueError, match="camera_tasks: unknown task 'zoom'"):
        build_stage({**spec, "camera_tasks": {"zoom": 1}})
