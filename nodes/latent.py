"""Video latents in pixel space: empty video, frames <-> latent (so SDEdit video-to-video needs no VAE)."""
from __future__ import annotations

import itertools

import torch

import comfy.model_management as mm
from comfy_api.latest import io

from ..lumiere.memory import format_bytes, sampler_copies_bytes
from .search import aliases


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """A NaN or infinite value in a user's frames, mask or latent is an error naming the input (it would
    otherwise come out as a black clip reported as a success). The test is a sum (finite unless a value is not,
    or the values overflow float32): one pass that allocates nothing, even for a broadcast view; only a failed
    sum counts the bad values, one 2-D plane at a time."""
    if torch.isfinite(x.sum(dtype=torch.float32)):
        return x
    planes = itertools.product(*map(range, x.shape[:-2]))  # 2-D views: no copy of the whole, even when broadcast
    bad = sum(int((~torch.isfinite(x[i])).sum()) for i in planes)
    if bad:
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or infinite value(s) of {x.numel()}")
    return x  # finite values whose sum overflowed


def frames_to_video(frames: torch.Tensor, name: str = "frames") -> torch.Tensor:
    """IMAGE frames [T, H, W, C] in 0..1 -> one video (1, 3, T, H, W) in -1..1 (alpha dropped)."""
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: expected IMAGE frames [T, H, W, 3], got {list(frames.shape)}")
    check_finite(frames, name)
    return (frames[..., :3].movedim(-1, 0)[None].float() * 2 - 1).to(mm.intermediate_device())


def latent_video(latent: dict, name: str = "latent") -> torch.Tensor:
    """The videos (B, 3, T, H, W) of a Lumiere video latent, or a ValueError naming the input."""
    video = latent["samples"]
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"{name}: expected a Lumiere video latent [B, 3, T, H, W], got {list(video.shape)}")
    return check_finite(video, name)


def check_latent_memory(shape, name: str, fix: str, made_channels: int = 3) -> None:
    """Refuse, before it is made, a video latent that could never be sampled here: what the node makes
    (`made_channels` fp32 values per pixel and frame) and the sampler's own fp32 copies of the latent
    (`lumiere.memory.sampler_copies_bytes`) would not fit the memory free on the sampling device."""
    need = sampler_copies_bytes(tuple(shape), made_channels)
    free = mm.get_free_memory(mm.get_torch_device())
    if need > free:
        raise ValueError(f"{name}: expected a video that fits the {format_bytes(free)} free, got {list(shape)} "
                         f"(its sampling alone needs {format_bytes(need)}); {fix}")


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """Videos (B, 3, T, H, W) in -1..1 -> IMAGE frames [B*T, H, W, 3] in 0..1 (videos one after another)."""
    frames = ((video.float() + 1) / 2).clamp(0, 1).movedim(1, -1)  # (B, T, H, W, 3)
    return frames.reshape(-1, *frames.shape[2:]).to(mm.intermediate_device())


class LumiereEmptyVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereEmptyVideo",
            **aliases("LumiereEmptyVideo"),
            display_name="Lumiere Empty Video",
            category="Lumiere/latent",
            description="A blank pixel-space video latent [B, 3, T, H, W] to sample from (text-to-video). "
                        "Core empty-latent nodes make 1/8-size 4-channel latents, which Lumiere cannot use.",
            inputs=[
                io.Int.Input("frames", default=16, min=1, max=4096,
                             tooltip="Number of frames; a multiple of the model's frame multiple (see the loader)."),
                io.Int.Input("width", default=32, min=8, max=8192, step=8, tooltip="Frame width in pixels."),
                io.Int.Input("height", default=32, min=8, max=8192, step=8, tooltip="Frame height in pixels."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Number of videos sampled together."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, frames, width, height, batch_size=1) -> io.NodeOutput:
        check_latent_memory((batch_size, 3, frames, height, width), "width/height/frames",
                            "use the model's size and frames (the Lumiere Loader's outputs)")
        samples = torch.zeros(batch_size, 3, frames, height, width, device=mm.intermediate_device())
        return io.NodeOutput({"samples": samples})


class LumiereFramesToLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereFramesToLatent",
            **aliases("LumiereFramesToLatent"),
            display_name="Lumiere Frames to Latent",
            category="Lumiere/latent",
            description="IMAGE frames [T, H, W, 3] (0..1) -> a video latent [1, 3, T, H, W] (-1..1). Sample it with "
                        "denoise < 1 for SDEdit video-to-video.",
            inputs=[io.Image.Input("frames", tooltip="The video as an IMAGE batch, one image per frame.")],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, frames) -> io.NodeOutput:
        return io.NodeOutput({"samples": frames_to_video(frames)})


class LumiereLatentToFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereLatentToFrames",
            **aliases("LumiereLatentToFrames"),
            display_name="Lumiere Latent to Frames",
            category="Lumiere/latent",
            description="A video latent [B, 3, T, H, W] (-1..1) -> IMAGE frames [B*T, H, W, 3] (0..1), for core "
                        "CreateVideo + SaveVideo, SaveAnimatedWEBP or any image node.",
            inputs=[io.Latent.Input("latent", tooltip="A Lumiere video latent, e.g. from Lumiere Sampler.")],
            outputs=[io.Image.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, latent) -> io.NodeOutput:
        return io.NodeOutput(video_to_frames(latent_video(latent)))


NODES = [LumiereEmptyVideo, LumiereFramesToLatent, LumiereLatentToFrames]
