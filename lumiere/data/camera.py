"""Seeded camera-motion clips over still images: pans in four directions and zooms in / out, captioned.

Caption: "the camera pans {left,right,up,down}" or "the camera zooms {in,out}".
Convention (the film one): "the camera pans right" moves the view right over the scene, so the content moves
*left* in the frame and new content enters at the *right* edge; "pans up" moves the content down. "zooms in"
shrinks the view about its centre (the content grows), "zooms out" widens it.

Sources: the images of a folder (`photos`: any image PIL reads, sub-folders included) and seeded procedural
textures (smooth colour fields with blobs and bars), so the data work with no photos at all. Each image is
resized once, with anti-aliasing, so that a view is about 1:1 with the clip's pixels; a clip is then
`grid_sample`d along the view's path (sub-pixel, no aliasing). Everything random is drawn from a
`torch.Generator` (exact resume); the photos are read in sorted order.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .procedural import random_frames

PANS = ("left", "right", "up", "down")
ZOOMS = ("in", "out")
CAMERA_MOTIONS = PANS + ZOOMS
CAMERA_VOCAB = ("the", "camera", "pans", "zooms", "in", "out") + PANS  # every word of every camera caption
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# the direction the *content* moves in the frame (x right, y down) when the camera pans that way
CONTENT_MOTION = {"left": (1.0, 0.0), "right": (-1.0, 0.0), "up": (0.0, 1.0), "down": (0.0, -1.0)}
SOURCE_SCALE = 1.6  # an image's short side, in clip pixels: views of 0.45..0.75 of it are ~1:1


def camera_caption(motion: str) -> str:
    if motion not in CAMERA_MOTIONS:
        raise ValueError(f"camera motion: expected one of {CAMERA_MOTIONS}, got {motion!r}")
    return f"the camera {'pans' if motion in PANS else 'zooms'} {motion}"


def image_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"photos: expected a folder of images, got {str(root)!r}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"photos: expected images ({', '.join(IMAGE_EXTENSIONS)}) in {str(root)!r}, found none")
    return files


def load_image(path: str | Path, short_side: int) -> torch.Tensor:
    """An image file -> (3, H, W) in -1..1, its short side resized (anti-aliased) to `short_side`."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        k = short_side / min(w, h)
        im = im.resize((max(short_side, round(w * k)), max(short_side, round(h * k))), Image.LANCZOS)
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(im.size[1], im.size[0], 3)
    return x.permute(2, 0, 1).float() / 127.5 - 1


def procedural_texture(generator: torch.Generator, side: int) -> torch.Tensor:
    """A seeded (3, side, side) texture in -1..1: smooth colour noise at two scales, blobs and bars."""
    g = generator
    coarse = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(side, side), mode="bicubic",
                           align_corners=False)[0]
    fine = F.interpolate(torch.rand(1, 3, 12, 12, generator=g) - 0.5, size=(side, side), mode="bicubic",
                         align_corners=False)[0]
    img = coarse * 0.8 + fine * 0.5
    yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                            indexing="ij")
    u = torch.rand(8, 6, generator=g)
    for k in range(8):  # 5 soft discs, 3 bars, each of its own colour
        col = u[k, 3:, None, None]
        if k < 5:
            r = side * (0.06 + 0.12 * u[k, 2])
            d = ((xx - side * u[k, 0]) ** 2 + (yy - side * u[k, 1]) ** 2).sqrt()
            a = (r + 0.5 - d).clamp(0, 1)
        else:
            horizontal = bool(u[k, 2] < 0.5)
            pos, width = side * u[k, 0], side * (0.03 + 0.06 * u[k, 1])
            a = (width + 0.5 - ((yy if horizontal else xx) - pos).abs()).clamp(0, 1)
        img = img * (1 - a) + col * a
    return img.clamp(0, 1) * 2 - 1


def view_grid(centre: torch.Tensor, half: torch.Tensor, src_hw: tuple[int, int], size: int) -> torch.Tensor:
    """Sampling grids of square views.  centre (t, 2) px (x, y) and half (t,) px in the source of size src_hw
    -> (t, size, size, 2) in grid_sample's -1..1 coordinates (align_corners=False)."""
    H, W = src_hw
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres of the view, -1..1
    x = centre[:, 0, None] + half[:, None] * steps[None]  # (t, size) source px
    y = centre[:, 1, None] + half[:, None] * steps[None]
    gx = (x / W * 2 - 1)[:, None, :].expand(-1, size, -1)
    gy = (y / H * 2 - 1)[:, :, None].expand(-1, -1, size)
    return torch.stack([gx, gy], dim=-1)


class CameraClips:
    """Batches of captioned camera-motion clips (b, 3, t, size, size) in -1..1 (the `clips` interface of the
    other datasets; specs are {"camera": motion, "source": "texture" or the photo's name}).

    photos: a folder of images (None: procedural textures only). textures: the fraction of clips over a
    procedural texture when photos are given. speed: (min, max) pan speed in px/frame at 32 px. zoom: (min, max)
    total zoom factor over a 16-frame clip (scaled to the clip's length).
    """

    def __init__(self, size: int = 32, frames: int = 16, photos: str | Path | None = None, textures: float = 0.5,
                 speed: tuple[float, float] = (0.7, 1.4), zoom: tuple[float, float] = (1.3, 1.7),
                 motions: tuple[str, ...] = CAMERA_MOTIONS):
        self.size, self.frames = size, frames
        self.files = image_files(photos) if photos else []
        self.textures = 1.0 if not self.files else float(textures)
        if not 0.0 <= self.textures <= 1.0:
            raise ValueError(f"textures: expected a fraction in 0..1, got {textures}")
        self.speed, self.zoom = tuple(speed), tuple(zoom)
        for m in motions:
            if m not in CAMERA_MOTIONS:
                raise ValueError(f"camera motion: expected one of {CAMERA_MOTIONS}, got {m!r}")
        self.motions = tuple(motions)
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def photo(self, i: int, size: int) -> torch.Tensor:
        key = (i, size)
        if key not in self._cache:
            self._cache[key] = load_image(self.files[i], math.ceil(size * SOURCE_SCALE))
        return self._cache[key]

    def texture(self, generator: torch.Generator, size: int) -> torch.Tensor:
        return procedural_texture(generator, math.ceil(size * SOURCE_SCALE))

    def render(self, src: torch.Tensor, motion: str, u: torch.Tensor, frames: int, size: int,
               flip: bool) -> torch.Tensor:
        """One clip over `src` (3, H, W): the view's path drawn from u (4 uniforms) -> (3, t, size, size)."""
        if flip:
            src = src.flip(-1)
        _, H, W = src.shape
        k = size / 32.0
        short = min(H, W)
        view = short * (0.45 + 0.3 * u[0])  # the view's side in source px
        t = torch.arange(frames, dtype=torch.float32)
        if motion in PANS:
            step = (self.speed[0] + (self.speed[1] - self.speed[0]) * u[1]) * k * view / size  # source px/frame
            dx, dy = CONTENT_MOTION[motion]
            travel = step * max(frames - 1, 0)
            half = torch.full((frames,), view / 2)
            room_x, room_y = W - view - abs(dx) * travel, H - view - abs(dy) * travel
            if room_x < 0 or room_y < 0:  # a small image: slow the pan down so the path fits
                fit = min(W - view, H - view) / max(travel, 1e-6)
                step, travel = step * max(fit, 0.0), travel * max(fit, 0.0)
                room_x, room_y = W - view - abs(dx) * travel, H - view - abs(dy) * travel
            # the view moves against the content: start at the side the view moves away from
            x0 = view / 2 + max(room_x, 0) * float(u[2]) + (travel if dx > 0 else 0.0)
            y0 = view / 2 + max(room_y, 0) * float(u[3]) + (travel if dy > 0 else 0.0)
            centre = torch.stack([x0 - dx * step * t, y0 - dy * step * t], dim=-1)
        else:
            total = (self.zoom[0] + (self.zoom[1] - self.zoom[0]) * u[1]) ** (max(frames - 1, 1) / 15)
            rate = total ** (1 / max(frames - 1, 1))
            scale = rate ** (-t if motion == "in" else t - (frames - 1))  # the view relative to the widest one
            half = view / 2 * scale
            cx = view / 2 + (W - view) * float(u[2])
            cy = view / 2 + (H - view) * float(u[3])
            centre = torch.tensor([[cx, cy]]).expand(frames, 2)
        grid = view_grid(centre, half, (H, W), size)  # (t, size, size, 2)
        out = F.grid_sample(src[None].expand(frames, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)  # (t, 3, size, size)
        return out.permute(1, 0, 2, 3).clamp(-1, 1)

    def clips(self, n: int, generator: torch.Generator, frames: int | None = None,
              size: int | None = None) -> tuple[torch.Tensor, list[str], list[dict]]:
        """n random clips -> (video (n, 3, t, s, s), captions, specs)"""
        frames, size = frames or self.frames, size or self.size
        mi = torch.randint(len(self.motions), (n,), generator=generator).tolist()
        u = torch.rand(n, 7, generator=generator)
        out, specs = [], []
        for i in range(n):
            motion = self.motions[mi[i]]
            if self.files and float(u[i, 4]) >= self.textures:
                j = min(int(float(u[i, 5]) * len(self.files)), len(self.files) - 1)
                src, name = self.photo(j, size), self.files[j].name
            else:
                src, name = self.texture(generator, size), "texture"
            out.append(self.render(src, motion, u[i, :4], frames, size, flip=bool(u[i, 6] < 0.5)))
            specs.append({"camera": motion, "source": name})
        return torch.stack(out), [camera_caption(s["camera"]) for s in specs], specs

    def images(self, n: int, generator: torch.Generator, size: int | None = None):
        video, caps, specs = self.clips(n, generator, frames=1, size=size)
        return video[:, :, 0], caps, specs


class MixedClips:
    """Clips from several datasets: each clip's source drawn by weight, in one batch (specs say which)."""

    def __init__(self, sources: list[tuple[object, float]]):
        if not sources or any(w < 0 for _, w in sources) or sum(w for _, w in sources) <= 0:
            raise ValueError(f"data mixture: expected positive weights, got {[w for _, w in sources]}")
        self.sources = sources
        self.frames, self.size = sources[0][0].frames, sources[0][0].size

    def clips(self, n: int, generator: torch.Generator, frames: int | None = None, size: int | None = None):
        probs = torch.tensor([float(w) for _, w in self.sources])
        pick = torch.multinomial(probs, n, replacement=True, generator=generator)
        video = torch.empty(n, 3, frames or self.frames, size or self.size, size or self.size)
        caps, specs = [""] * n, [None] * n
        for k, (data, _) in enumerate(self.sources):
            idx = (pick == k).nonzero().flatten().tolist()
            if not idx:
                continue
            v, c, s = data.clips(len(idx), generator, frames=frames, size=size)
            video[idx] = v
            for j, i in enumerate(idx):
                caps[i], specs[i] = c[j], s[j]
        return video, caps, specs

    def images(self, n: int, generator: torch.Generator, size: int | None = None):
        return random_frames(self.clips(n, generator, size=size), generator)


# ---- the held-out camera clips (the eval's camera section and the training probe) ----
CAMERA_CLIPS_PER_PHOTO = 6  # one per camera motion


def camera_clips(photos: str | Path | None, size: int, frames: int, seed: int,
                 per_source: int = CAMERA_CLIPS_PER_PHOTO, sources: int = 0):
    """Held-out camera clips: `per_source` camera motions (all six at the default) over each held-out photo (or,
    without photos, over 4 seeded textures), the motions rotating over the sources -> (video (n, 3, t, s, s),
    captions, specs). `sources` > 0: that many photos, evenly spaced in sorted order (a quicker probe)."""
    folder = Path(photos) if photos else None
    data = CameraClips(size=size, frames=frames, photos=folder if folder and folder.is_dir() else None)
    g = torch.Generator().manual_seed(10_000 + seed)
    n_sources = len(data.files) or 4
    picks = range(n_sources)
    if 0 < sources < n_sources:
        picks = [k * n_sources // sources for k in range(sources)]
    vids, specs = [], []
    for j in picks:
        src = data.photo(j, size) if data.files else data.texture(g, size)
        name = data.files[j].name if data.files else f"texture{j}"
        for i in range(per_source):
            motion = CAMERA_MOTIONS[(i + j) % len(CAMERA_MOTIONS)]
            u = torch.rand(4, generator=g)
            vids.append(data.render(src, motion, u, frames, size, flip=False))
            specs.append({"camera": motion, "source": name})
    return torch.stack(vids), [camera_caption(s["camera"]) for s in specs], specs
