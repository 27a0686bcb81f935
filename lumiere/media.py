"""Reading images, masks and videos from files, and writing videos, for the CLI.

Tensors are the library's: frames in -1..1, videos (b, 3, t, h, w). Errors are ValueErrors naming the file.
Animated .webp/.gif and folders of frames go through PIL; other containers (.mp4, .webm, ...) through PyAV.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PIL_ANIMATIONS = (".gif", ".webp")
OUTPUT_FORMATS = (".webp", ".gif", ".mp4")  # anything without a suffix is a folder of PNGs


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    return img


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 (h, w, 3) frames -> (1, 3, t, h, w) in -1..1."""
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1
    return video[None].contiguous()


def resize_video(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (b, c, t, h, w) frames to height x width (area when shrinking, bilinear when growing)."""
    b, c, t, h, w = video.shape
    if (h, w) == (height, width):
        return video
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    shrink = height <= h and width <= w
    frames = F.interpolate(frames, size=(height, width), mode="area" if shrink else "bilinear",
                           **({} if shrink else {"align_corners": False}))
    return frames.reshape(b, t, c, height, width).permute(0, 2, 1, 3, 4).clamp(-1, 1).contiguous()


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An RGB image resized to height x width.  # -> (1, 3, h, w)"""
    img = _open_image(Path(path)).convert("RGB")
    return resize_video(_to_tensor([np.asarray(img)]), height, width)[:, :, 0]


def load_mask(path: str | Path, height: int, width: int) -> torch.Tensor:
    """A grayscale mask resized (nearest) to height x width: white (> 50 %) = 1.  # -> (h, w) of 0/1"""
    from PIL import Image

    img = _open_image(Path(path)).convert("L").resize((width, height), Image.NEAREST)
    return torch.from_numpy(np.asarray(img) > 127).float()


def load_video(path: str | Path, frames: int, height: int, width: int, at_least: int | None = None) -> torch.Tensor:
    """The first `frames` frames of a video file or a folder of images, resized; fewer is an error unless
    `at_least` allows it.  # -> (1, 3, t, h, w)"""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        arrays = [np.asarray(_open_image(p).convert("RGB")) for p in files[:frames]]
        if arrays and any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError(f"{path}: the frames do not all have the same size")
    elif path.suffix.lower() in PIL_ANIMATIONS:
        from PIL import ImageSequence

        img = _open_image(path)
        arrays = [np.asarray(f.convert("RGB")) for _, f in zip(range(frames), ImageSequence.Iterator(img))]
    elif path.is_file():
        from .data.folder import decode_video  # PyAV decoding, shared with the training data loader

        video = decode_video(path, max_frames=frames)
        arrays = None
    else:
        raise ValueError(f"{path}: no such file or folder")
    if arrays is not None:
        video = _to_tensor(arrays)[0] if arrays else torch.zeros(3, 0, 1, 1)
    need = frames if at_least is None else at_least
    if video.shape[1] < need:
        raise ValueError(f"{path}: has {video.shape[1]} frames, {need} are needed")
    return resize_video(video[None], height, width)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, t, h, w) in -1..1 -> (t, h, w, 3) uint8."""
    return ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def check_output_path(path: str | Path) -> Path:
    """A path save_video can write (checked before generating, not after)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{path}: unsupported output format {suffix!r} (expected one of "
                         f"{', '.join(OUTPUT_FORMATS)}, or a folder name without a suffix)")
    if suffix and path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a file name")
    return path


def save_video(video: torch.Tensor, path: str | Path, fps: int) -> Path:
    """Write (3, t, h, w) in -1..1 as .webp / .gif (PIL), .mp4 (PyAV, H.264) or, without a suffix, a folder of
    PNGs (frame_0000.png, ...). Returns the path written."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    frames = to_uint8(video)
    if suffix == ".mp4":
        _write_mp4(frames, path, fps)
        return path
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    if not suffix:
        path.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            img.save(path / f"frame_{i:04d}.png")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = max(1, round(1000 / fps))
    extra = {"lossless": True} if suffix == ".webp" else {"disposal": 2}
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, **extra)
    return path


def _write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: H.264 needs an even width and height, got {w}x{h}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "16"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
