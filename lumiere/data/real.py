"""Real footage and photos for the photo-domain models: random crops of clips and stills, captioned.

The folder is what `scripts/fetch_media.py` (`make media`) writes: `clips/{split}/*.mkv` (or any video PyAV
reads) and `stills/{split}/*.png|jpg|webp`. A clip is `frames` consecutive frames at the model's frame rate from a
random start (short videos loop), under one random square crop whose side is a log-uniform fraction `crop` of the
video's short side, randomly mirrored, resized with anti-aliasing to `size`. An image is such a crop of a still
(with probability `stills`) or of one frame of a clip. Captions: "a video" for clips, "a photo" for images.

Everything is decoded once (uint8 in memory, a few hundred MB for the fetched set) and every draw comes from the
one `torch.Generator` (exact resume). Specs name the file of each clip.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .camera import IMAGE_EXTENSIONS, load_image
from .folder import VIDEO_EXTENSIONS, decode_video

CLIP_CAPTION = "a video"
STILL_CAPTION = "a photo"
REAL_VOCAB = ("a", "video", "photo")
SPLITS = ("train", "heldout")


def media_files(root: Path, kind: str, split: str) -> list[Path]:
    folder = root / kind / split
    exts = VIDEO_EXTENSIONS if kind == "clips" else IMAGE_EXTENSIONS
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts) if folder.is_dir() else []


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def crop_resize(x: torch.Tensor, side: int, y0: int, x0: int, size: int, flip: bool) -> torch.Tensor:
    """uint8 (..., H, W) frames -> a square crop resized to size x size (anti-aliased), float -1..1."""
    c = x[..., y0:y0 + side, x0:x0 + side].float()
    lead = c.shape[:-2]
    c = c.reshape(-1, 1, side, side)
    if side != size:
        c = F.interpolate(c, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    c = c.reshape(*lead, size, size) / 127.5 - 1
    return (c.flip(-1) if flip else c).clamp(-1, 1)


class RealClips:
    """Batches of real clips (b, 3, t, size, size) and images (b, 3, size, size) in -1..1 (the `clips` /
    `images` interface of the other datasets)."""

    def __init__(self, root: str | Path, size: int = 32, frames: int = 16, fps: float = 8, split: str = "train",
                 crop: tuple[float, float] = (0.4, 1.0), stills: float = 0.5):
        self.root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"data.split: expected one of {SPLITS} for real data, got {split!r}")
        self.clip_files = media_files(self.root, "clips", split)
        self.still_files = media_files(self.root, "stills", split)
        if not self.clip_files and not self.still_files:
            raise ValueError(f"data.path: expected clips/{split}/ or stills/{split}/ with media in {self.root} "
                             f"(`make media` writes them), found none")
        if not (0 < crop[0] <= crop[1] <= 1):
            raise ValueError(f"data.crop: expected 0 < min <= max <= 1 (fractions of the short side), got {crop}")
        if not 0 <= stills <= 1:
            raise ValueError(f"data.stills: expected a fraction in 0..1, got {stills}")
        self.size, self.frames, self.fps, self.crop = size, frames, fps, tuple(crop)
        self.stills = stills if self.clip_files and self.still_files else float(bool(self.still_files))
        self.videos = [to_uint8(decode_video(p, fps)) for p in self.clip_files]  # (3, t, H, W) uint8
        side = math.ceil(size / crop[0])  # stills: big enough that the smallest crop is still >= size
        self.images_ = [to_uint8(load_image(p, max(side, size))) for p in self.still_files]  # (3, H, W)
        for p, v in zip(self.clip_files, self.videos):
            if min(v.shape[-2:]) < 8:
                raise ValueError(f"data.path: {p} is too small ({tuple(v.shape[-2:])})")

    def _crop(self, hw: tuple[int, int], u: torch.Tensor) -> tuple[int, int, int]:
        """A square crop (side, y0, x0) of an H x W frame from 3 uniforms."""
        h, w = hw
        short = min(h, w)
        lo, hi = math.log(self.crop[0]), math.log(self.crop[1])
        side = max(1, min(short, round(short * math.exp(lo + (hi - lo) * float(u[0])))))
        return side, int((h - side) * float(u[1])), int((w - side) * float(u[2]))

    def clips(self, n: int, generator: torch.Generator, frames: int | None = None,
              size: int | None = None) -> tuple[torch.Tensor, list[str], list[dict]]:
        frames, size = frames or self.frames, size or self.size
        if not self.videos:
            raise ValueError(f"data.path: expected clips in {self.root / 'clips'} for video training, found none")
        idx = torch.randint(len(self.videos), (n,), generator=generator).tolist()
        u = torch.rand(n, 5, generator=generator)
        out = []
        for i, r in zip(idx, u):
            v = self.videos[i]
            t = v.shape[1]
            start = int(float(r[3]) * max(1, t - frames + 1))
            frame_idx = (start + torch.arange(frames)) % t  # loop short videos
            side, y0, x0 = self._crop(v.shape[-2:], r)
            out.append(crop_resize(v[:, frame_idx], side, y0, x0, size, bool(r[4] < 0.5)))
        specs = [{"file": self.clip_files[i].name} for i in idx]
        return torch.stack(out), [CLIP_CAPTION] * n, specs

    def images(self, n: int, generator: torch.Generator,
               size: int | None = None) -> tuple[torch.Tensor, list[str], list[dict]]:
        size = size or self.size
        u = torch.rand(n, 7, generator=generator)
        out, caps, specs = [], [], []
        for r in u:
            if float(r[4]) < self.stills:
                k = min(int(float(r[5]) * len(self.images_)), len(self.images_) - 1)
                img, name = self.images_[k], self.still_files[k].name
            else:
                k = min(int(float(r[5]) * len(self.videos)), len(self.videos) - 1)
                v = self.videos[k]
                img, name = v[:, min(int(float(r[3]) * v.shape[1]), v.shape[1] - 1)], self.clip_files[k].name
            side, y0, x0 = self._crop(img.shape[-2:], r)
            out.append(crop_resize(img, side, y0, x0, size, bool(r[6] < 0.5)))
            caps.append(STILL_CAPTION)
            specs.append({"file": name})
        return torch.stack(out), caps, specs
