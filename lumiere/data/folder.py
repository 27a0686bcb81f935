"""A folder of captioned videos for real training: `clip.mp4` (or .webm/.gif/.webp/.mov/.mkv) + `clip.txt` (caption).

Each video is decoded (animated .webp / .gif with Pillow, other containers with PyAV), resampled to the model's frame rate (nearest frame in time), centre-cropped
to a square and resized to the model's resolution. A training clip is `frames` consecutive resampled frames from
a random start (videos shorter than that are looped). Videos without a caption file get the empty caption
(they still train the unconditional model). Decoded videos are cached in memory (after resizing, they are small).
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".webp", ".mov", ".mkv", ".avi")
PIL_ANIMATIONS = (".gif", ".webp")  # decoded with Pillow (frame durations give the times); the rest with PyAV


def _decode_pil(path: Path) -> tuple[list[torch.Tensor], list[float]]:
    """An animated (or still) .webp / .gif -> uint8 (h, w, 3) frames and their start times (s)."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    frames, times, t = [], [], 0.0
    try:
        with Image.open(path) as img:
            for frame in ImageSequence.Iterator(img):
                frames.append(torch.from_numpy(np.asarray(frame.convert("RGB")).copy()))
                times.append(t)
                t += max(float(frame.info.get("duration") or 125), 1.0) / 1000  # ms; none given: 8 fps
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: cannot decode video: {e}") from None
    return frames, times


def _decode_av(path: Path) -> tuple[list[torch.Tensor], list[float]]:
    """Any container PyAV reads -> uint8 (h, w, 3) frames and their times (s)."""
    import av  # PyAV

    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))  # (h, w, 3) uint8
                times.append(float(frame.time) if frame.time is not None
                             else len(frames) / float(stream.average_rate or 8))
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise ValueError(f"{path}: cannot decode video: {e}") from None
    return frames, times


def decode_video(path: str | Path, fps: float | None = None, size: int | None = None,
                 max_frames: int | None = None) -> torch.Tensor:
    """Decode a video file -> (3, t, size, size) in -1..1, resampled to `fps` (None: every frame).
    Animated .webp / .gif go through Pillow, other containers through PyAV."""
    path = Path(path)
    frames, times = (_decode_pil if path.suffix.lower() in PIL_ANIMATIONS else _decode_av)(path)
    if not frames:
        raise ValueError(f"{path}: no video frames")
    video = torch.stack(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, t, h, w)
    if fps:
        t0, t1 = times[0], times[-1]
        n = max(1, int((t1 - t0) * fps) + 1)
        want = t0 + torch.arange(n, dtype=torch.float64) / fps
        ts = torch.tensor(times, dtype=torch.float64)
        idx = (want[:, None] - ts[None]).abs().argmin(dim=1)
        video = video[:, idx]
    if max_frames:
        video = video[:, :max_frames]
    if size:
        _, t, h, w = video.shape
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        video = video[:, :, y0:y0 + s, x0:x0 + s]
        video = F.interpolate(video.permute(1, 0, 2, 3), size=(size, size), mode="area" if s > size else "bilinear",
                              **({} if s > size else {"align_corners": False})).permute(1, 0, 2, 3)
    return video.clamp(-1, 1).contiguous()


class FolderDataset:
    """Captioned videos in a folder (searched recursively); `clips`/`images` match `ProceduralClips`."""

    def __init__(self, root: str | Path, frames: int = 16, size: int = 32, fps: float | None = 8,
                 cache: bool = True, workers: int = 0, rank: int = 0, world: int = 1):
        """`workers` > 0 (with `cache`): that many threads decode every video ahead of use (PyAV decodes outside
        the GIL); `wait_seconds` counts the time training waited for a video. `rank` / `world`: a torchrun rank
        reads files rank, rank + world, ... (disjoint shards; every rank keeps all files if there are fewer than
        `world`). Which clips are drawn depends only on the generator, so resume stays exact."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"data.path: {self.root} is not a folder")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise ValueError(f"data.path: no videos ({', '.join(VIDEO_EXTENSIONS)}) in {self.root}")
        if not 0 <= rank < max(1, world):
            raise ValueError(f"rank: expected 0 to {world - 1}, got {rank}")
        self.files = files[rank::world] if world > 1 and len(files) >= world else files
        self.frames, self.size, self.fps = frames, size, fps
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.wait_seconds = 0.0
        self._pending: dict[int, Future] = {}
        if workers < 0:
            raise ValueError(f"data.workers: expected 0 or more decoding threads, got {workers}")
        if workers and cache:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="lumiere-decode")
            self._pending = {i: pool.submit(self._decode, i) for i in range(len(self.files))}
            pool.shutdown(wait=False)  # the queued decodes still run; the threads end when they are done

    def _decode(self, i: int) -> torch.Tensor:
        return decode_video(self.files[i], self.fps, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def caption(self, i: int) -> str:
        txt = self.files[i].with_suffix(".txt")
        return txt.read_text().strip() if txt.exists() else ""

    def video(self, i: int) -> torch.Tensor:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        start = time.perf_counter()
        pending = self._pending.pop(i, None)
        v = pending.result() if pending is not None else self._decode(i)
        self.wait_seconds += time.perf_counter() - start
        if self.cache is not None:
            self.cache[i] = v
        return v

    def clip(self, i: int, start: int) -> torch.Tensor:
        v = self.video(i)
        t = v.shape[1]
        idx = (start + torch.arange(self.frames)) % t  # loop short videos
        return v[:, idx]

    def clips(self, n: int, generator: torch.Generator, frames: int | None = None, size: int | None = None):
        if (frames and frames != self.frames) or (size and size != self.size):
            raise ValueError("FolderDataset: frames/size are fixed at construction")
        idx = torch.randint(len(self.files), (n,), generator=generator).tolist()
        u = torch.rand(n, generator=generator).tolist()
        out, caps = [], []
        for i, r in zip(idx, u):
            t = self.video(i).shape[1]
            start = int(r * max(1, t - self.frames + 1))
            out.append(self.clip(i, start))
            caps.append(self.caption(i))
        return torch.stack(out), caps, [{"file": str(self.files[i])} for i in idx]

    def images(self, n: int, generator: torch.Generator, size: int | None = None):
        video, caps, specs = self.clips(n, generator, size=size)
        k = torch.randint(video.shape[2], (n,), generator=generator)
        return video[torch.arange(n), :, k], caps, specs
