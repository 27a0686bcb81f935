"""Real footage and photos (`lumiere.data.real`, `scripts/fetch_media.py`): crops, seeding, splits, training on it."""
import importlib.util
import io
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from lumiere.data.folder import decode_video
from lumiere.data.real import CLIP_CAPTION, REAL_VOCAB, STILL_CAPTION, RealClips
from lumiere.train.stages import build_stage
from lumiere.train.trainer import Trainer
from test_train import TINY

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fetch_media", ROOT / "scripts" / "fetch_media.py")
fetch_media = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch_media)


def moving_frames(n: int, w: int = 96, h: int = 72, step: int = 3) -> list[Image.Image]:
    """A white square moving right on a horizontal colour ramp, `step` px a frame."""
    x = torch.linspace(0, 255, w).round().byte()
    out = []
    for k in range(n):
        img = torch.zeros(h, w, 3, dtype=torch.uint8)
        img[..., 0], img[..., 2] = x, x.flip(0)
        img[20:40, 5 + step * k:25 + step * k] = 255
        out.append(Image.fromarray(img.numpy()))
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A fetched-media folder in miniature: two clips (written as fetch_media writes them) and two stills."""
    d = tmp_path_factory.mktemp("real")
    fetch_media.write_clip(d / "clips" / "train" / "a.mkv", moving_frames(20))
    fetch_media.write_clip(d / "clips" / "train" / "b.mkv", moving_frames(12, step=1))
    fetch_media.write_clip(d / "clips" / "heldout" / "c.mkv", moving_frames(16))
    for name, size in (("p.png", (120, 90)), ("q.png", (64, 100))):
        (d / "stills" / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8,
                                      generator=torch.Generator().manual_seed(len(name))).numpy()).save(
            d / "stills" / "train" / name)
    return d


def test_fetch_helpers_split_and_resample():
    assert fetch_media.template_group("api_flux_video_edit-2.webp") == "api_flux_video_edit"
    assert fetch_media.template_group("video_wan2_2-14B.webp") == "video_wan2_2-14B"
    assert fetch_media.template_group("plain.webp") == "plain"
    # siblings share a split; about one template in five is held out
    names = [f"template_{i}" for i in range(400)]
    held = sum(fetch_media.heldout_template(n) for n in names)
    assert 40 < held < 120
    # 66 ms frames (a 15 fps WebP, 1.98 s) on a 16 fps clock: 31 ticks, in order, each frame shown (the last one
    # starts after the last tick), one shown twice
    times = [k * 0.066 for k in range(30)]
    idx = fetch_media.resample(times, 16)
    assert len(idx) == 31 and idx == sorted(idx) and set(idx) == set(range(29)) | {idx[-1]} and idx[-1] >= 28
    # 34 ms frames (~30 fps): about every second frame is kept
    idx = fetch_media.resample([k * 0.034 for k in range(60)], 16)
    assert 30 <= len(idx) <= 33 and all(1 <= b - a <= 3 for a, b in zip(idx, idx[1:]))


def test_write_clip_is_lossless_and_timed(media):
    with av.open(str(media / "clips" / "train" / "a.mkv")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = c.streams.video[0].average_rate
    assert len(frames) == 20 and float(rate) == fetch_media.STORE_FPS
    want = [torch.from_numpy(np.array(im)) for im in moving_frames(20)]
    # yuv444p round trip: within a step or two of 8-bit values
    assert max(int((torch.from_numpy(f).int() - w.int()).abs().max()) for f, w in zip(frames, want)) <= 3


def test_webp_frames_read_durations():
    buf = io.BytesIO()
    frames = moving_frames(6)
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=66, lossless=True)
    out, times = fetch_media.webp_frames(buf.getvalue())
    assert len(out) == 6 and times[1] == pytest.approx(0.066) and times[-1] == pytest.approx(5 * 0.066)


def test_real_clips_are_seeded_cropped_and_captioned(media):
    data = RealClips(media, size=32, frames=16, fps=8)
    a = data.clips(6, torch.Generator().manual_seed(0))
    b = data.clips(6, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] == [CLIP_CAPTION] * 6
    video = a[0]
    assert video.shape == (6, 3, 16, 32, 32) and video.min() >= -1 and video.max() <= 1
    assert {s["file"] for s in a[2]} <= {"a.mkv", "b.mkv"}  # never the held-out clip
    # the square moves: frames differ along the clip (not one frame repeated)
    assert float((video[:, :, 1:] - video[:, :, :-1]).abs().mean()) > 0.01
    imgs, caps, specs = data.images(64, torch.Generator().manual_seed(1))
    assert imgs.shape == (64, 3, 32, 32) and caps == [STILL_CAPTION] * 64
    files = {s["file"] for s in specs}
    assert {"p.png", "q.png"} & files and {"a.mkv", "b.mkv"} & files  # stills and clip frames both drawn
    held = RealClips(media, size=32, frames=16, fps=8, split="heldout")
    assert {s["file"] for s in held.clips(4, torch.Generator().manual_seed(0))[2]} == {"c.mkv"}


def test_crops_are_antialiased():
    """A 1-px checkerboard cropped whole and resized 4x down averages to grey (no aliasing)."""
    from lumiere.data.real import crop_resize
    board = ((torch.arange(128)[:, None] + torch.arange(128)[None]) % 2 * 255).to(torch.uint8)[None].repeat(3, 1, 1)
    out = crop_resize(board, 128, 0, 0, 32, flip=False)
    assert float(out.abs().max()) < 0.05


def test_real_clips_errors(tmp_path, media):
    with pytest.raises(ValueError, match="data.path: expected clips/train/ or stills/train/"):
        RealClips(tmp_path)
    with pytest.raises(ValueError, match="data.split: expected one of"):
        RealClips(media, split="all")
    with pytest.raises(ValueError, match="data.crop: expected 0 < min <= max <= 1"):
        RealClips(media, crop=(0.8, 0.5))
    stills_only = tmp_path / "s"
    (stills_only / "stills" / "train").mkdir(parents=True)
    Image.new("RGB", (80, 80), (10, 200, 30)).save(stills_only / "stills" / "train" / "x.png")
    with pytest.raises(ValueError, match="expected clips in .* for video training"):
        RealClips(stills_only).clips(1, torch.Generator())
    assert RealClips(stills_only).images(2, torch.Generator())[0].shape == (2, 3, 32, 32)


def test_t2i_and_mixture_train_on_real_data(media, tmp_path):
    """The photo recipe end to end on a tiny model: T2I on real images, then the <J, C, M> mixture on real clips
    and camera motion over the stills, with exact resume."""
    t2i = {**TINY, "stage": "t2i", "data": {"kind": "real", "path": str(media)}, "batch_size": 4}
    tr = Trainer(t2i, out=tmp_path / "t2i", quiet=True, max_steps=3)
    tr.run()
    assert tr.stage.bundle.config.text.vocab == REAL_VOCAB
    mix = {**TINY, "stage": "conditioning", "init": str(tmp_path / "t2i" / "model.safetensors"),
           "data": {"kind": "real", "path": str(media), "camera": 0.5, "photos": str(media / "stills" / "train")},
           "tasks": {"image_to_video": 0.5, "extend": 0.5}, "unfreeze": ["unet."], "batch_size": 2,
           "checkpoint_minutes": 10 ** 6,
           "probe": {"motion": False, "steps": 2, "camera_photos": str(media / "stills" / "train"),
                     "camera_sources": 1}}
    stage = build_stage(mix)
    _, caps, specs = stage.data.clips(8, torch.Generator().manual_seed(0))
    assert any("camera" in s for s in specs) and any(c == CLIP_CAPTION for c in caps)
    from lumiere.data.camera import CAMERA_MOTIONS, camera_caption
    from lumiere.models.text import UNK
    assert all(UNK not in stage.bundle.text_encoder.tokenizer(camera_caption(m)) for m in CAMERA_MOTIONS)
    a = Trainer(mix, out=tmp_path / "a", quiet=True, max_steps=4)
    a.run()
    b = Trainer(mix, out=tmp_path / "b", quiet=True, max_steps=2)
    b.run()
    b = Trainer(mix, out=tmp_path / "b", quiet=True, max_steps=4, resume=True)
    b.run()
    assert all(torch.equal(x, y) for x, y in zip(a.params, b.params))
    assert math.isfinite(a.last_loss)
    # the probe of a photo model: the camera motions over one held-out photo, no shapes probe
    rec = a.probe()
    assert rec["camera_clips"] == 6 and "camera_direction_acc" in rec and "direction_acc" not in rec


def test_photo_eval_section_on_a_tiny_photo_model(media, tmp_path):
    """`eval --sections photo` end to end: a tiny photo base (T2I + mixture) beside the shipped shapes models,
    every figure present, the known pixels of inpainting exact, and Telea a real baseline (better than grey)."""
    from lumiere.eval import PHOTO_BASE, evaluate, telea_inpaint
    from lumiere.metrics import psnr
    t2i = {**TINY, "stage": "t2i", "data": {"kind": "real", "path": str(media)}, "batch_size": 4}
    Trainer(t2i, out=tmp_path / "t2i", quiet=True, max_steps=2).run()
    mix = {**TINY, "stage": "conditioning", "init": str(tmp_path / "t2i" / "model.safetensors"),
           "data": {"kind": "real", "path": str(media), "camera": 0.5, "photos": str(media / "stills" / "train")},
           "tasks": {"image_to_video": 0.5, "inpaint": 0.5}}
    tr = Trainer(mix, out=tmp_path / "mix", quiet=True, max_steps=2)
    tr.run()
    models = tmp_path / "models"
    models.mkdir()
    tr.export(models / PHOTO_BASE)
    for name in ("lumiere_demo_base.safetensors", "lumiere_demo_ssr.safetensors"):
        (models / name).symlink_to(ROOT / "models" / "lumiere" / name)
    # the stills of the fixture are held out for this test
    (media / "stills" / "heldout").mkdir(exist_ok=True)
    for p in (media / "stills" / "train").iterdir():
        (media / "stills" / "heldout" / p.name).write_bytes(p.read_bytes())
    res = evaluate(models, quick=True, sections=["photo"], real=media, log=lambda m: None)
    photo = res["photo"]
    assert photo["camera"]["clips"] == 2 and photo["camera"]["ground_truth"]["direction_acc"] == 1.0
    # "from_image" starts from the photo held still (SDEdit), keeping frame 0 exact like "replaced"
    assert photo["camera"]["from_image"]["frame0_psnr"] == photo["camera"]["replaced"]["frame0_psnr"] == 100.0
    assert photo["inpaint"]["known_exact"] is True and res["met"]["photo_inpaint_known_exact"] is True
    for name in ("photo_camera_direction_acc", "photo_camera_continuation_gain_db", "photo_inpaint_gain_over_telea_db",
                 "photo_v2v_psnr_to_input", "photo_ssr_shapes_model_gain_db", "photo_ssr_bicubic_psnr",
                 "photo_camera_continuation_gain_db_from_image"):
        assert name in res["summary"], name
    assert "photo_ssr_gain_over_bicubic_db" not in res["summary"]  # no photo SSR in this folder: not measured
    # Telea fills a hole of a smooth ramp far better than grey does
    ramp = torch.linspace(-1, 1, 32)[None, None, None, None].expand(1, 3, 2, 32, 32).contiguous()
    known = torch.ones(32, 32)
    known[8:24, 8:24] = 0
    hole = (1 - known)[None, None, None].expand_as(ramp)
    assert psnr(telea_inpaint(ramp, known), ramp, hole) > psnr(torch.zeros_like(ramp), ramp, hole) + 4
    (models / PHOTO_BASE).unlink()
    assert evaluate(models, quick=True, sections=["photo"], real=media, log=lambda m: None)["photo"] == \
        {"missing": str(models / PHOTO_BASE)}


def test_packed_media_reads_like_the_original(media, tmp_path):
    """`scripts/pack_media.py` (lossy animated WebP + JPEG, no PyAV needed to read): the same clips at the packed
    frame rate, close to the originals, and RealClips trains from the packed folder."""
    spec = importlib.util.spec_from_file_location("pack_media", ROOT / "scripts" / "pack_media.py")
    pack_media = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack_media)
    out = tmp_path / "packed"
    assert pack_media.main(["--src", str(media), "--out", str(out), "--fps", "8", "--short-side", "48",
                            "--quality", "95"]) == 0
    assert sorted(p.name for p in (out / "clips" / "train").iterdir()) == ["a.webp", "b.webp"]
    assert sorted(p.name for p in (out / "stills" / "train").iterdir()) == ["p.jpg", "q.jpg"]
    original = decode_video(media / "clips" / "train" / "a.mkv", 8)
    packed = decode_video(out / "clips" / "train" / "a.webp", 8)
    assert packed.shape[1] == original.shape[1] and packed.shape[2] == 48  # same frames in time, short side 48
    small = torch.nn.functional.interpolate(original.permute(1, 0, 2, 3), size=packed.shape[-2:], mode="area")
    psnr = -10 * torch.log10(((small.permute(1, 0, 2, 3) - packed) / 2).pow(2).mean())
    assert psnr > 25, psnr
    # the square moves right in the packed clip too (3 px a frame at 16 fps = 6 px per 8-fps frame, halved)
    col = packed[:, :, 12:26].mean(dim=(0, 2))  # (t, w): the square's rows
    assert col[-1].argmax() > col[0].argmax()
    data = RealClips(out, size=16, frames=4, fps=8, split="train")
    clips, captions, _ = data.clips(3, torch.Generator().manual_seed(0))
    assert clips.shape == (3, 3, 4, 16, 16) and set(captions) == {CLIP_CAPTION}
