"""The masked conditioning encoder: Lumiere's <J, C, M> tasks from core IMAGE and MASK inputs.

With `replace_known` the output LATENT carries the known pixels as its samples and a core "noise_mask"
(1 = generate, ComfyUI's convention): core sampling (KSamplerX0Inpaint, so Lumiere's sampler and core KSampler
alike) then puts the known pixels back, noised to the current level, at every step, and the Lumiere sampler
composites them exactly at the end. The same replacement as the library's `generate(replace_known=True)`.
"""
from __future__ import annotations

import torch

import comfy.model_management as mm
import comfy.utils
import node_helpers
from comfy_api.latest import io

from ..lumiere import conditioning as recipes
from .comfy_model import COND_KEY
from .latent import check_finite, check_latent_memory, frames_to_video
from .search import aliases

FIT_SIZE = 32  # the shipped demo models' frame size: a user's media is fitted to it unless width / height say otherwise
MODES = [m for m, task in recipes.TASKS.items() if task.source is not None]  # text alone needs no conditioning node


def generate_mask(mask: torch.Tensor | None, name: str = "mask") -> torch.Tensor:
    """A core MASK ([T, H, W] or [H, W], 1 = the painted area = what to generate)."""
    if mask is None:
        raise ValueError(f"{name}: this mode needs a MASK (1 = generate, 0 = keep)")
    if mask.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a MASK [T, H, W] or [H, W], got {list(mask.shape)}")
    return mask.float()


def build_cm(mode, image, mask, frames, pad, indices="0, -1") -> tuple[torch.Tensor, torch.Tensor]:
    """(C, M) with the library's task table (`conditioning.TASKS`: what each mode needs, its recipe); M = 1 where
    the pixels are known."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    task = recipes.TASKS[mode]
    if image is None:
        raise ValueError("image: every mode needs an IMAGE (a still for image_to_video/cinemagraph, the keyframes "
                         "for keyframes, the clip for extend, the video frames for inpaint/outpaint/direct)")
    if "mask" in task.needs:
        mask = generate_mask(mask)
    if "pad" in task.needs and not any(pad):
        raise ValueError("pad_left/pad_right/pad_top/pad_bottom: outpaint needs at least one non-zero pad")
    return recipes.build(mode, frames_to_video(image, "image"), frames, mask=mask, pad=pad,  # (1, 3, T, H, W)
                         indices=recipes.parse_indices(indices) if "indices" in task.needs else None)


def as_video_mask(mask: torch.Tensor, frames: int) -> torch.Tensor:
    """A MASK [H, W] or [T, H, W] (T = 1 or `frames`) -> (1, 1, frames, H, W), values kept (not thresholded)."""
    m = mask.float().clamp(0, 1)
    m = m[None, None, None] if m.ndim == 2 else m[None, None]
    return m.expand(1, 1, frames, *m.shape[-2:]).to(mm.intermediate_device())


def known_pixels(mode, image, mask, C, M) -> tuple[torch.Tensor, torch.Tensor]:
    """What replacement keeps: (K, W), K the known video (1, 3, T, H, W), W in 0..1 how much each pixel is known.

    W = M where the recipe's mask is binary by construction (image_to_video, outpaint, keyframes, extend); where the
    task needs the user's MASK (inpaint, direct, cinemagraph), W = 1 - MASK *before* the recipe's 0.5 threshold, so
    a feathered mask blends instead of cutting."""
    task = recipes.TASKS[mode]
    if "mask" not in task.needs:
        return C, M
    K, W = frames_to_video(image, "image"), 1 - as_video_mask(mask, C.shape[2])
    if task.source == "still":  # cinemagraph: the still is frame 0 and is held on every frame
        K = K[:, :, :1].expand_as(C)
        W[:, :, 0] = 1
    return K, W


def fit_inputs(image, mask, mode: str, frames: int, width: int, height: int):
    """The user's media fitted to what will be sampled: resized to width x height (0 = keep; centre-cropped to the
    aspect, as core Image Scale) and, for the modes whose source is the output's own video (inpaint/outpaint/direct),
    cut to the first `frames` frames, so a long high-resolution clip is not sampled whole by a small model."""
    if recipes.task(mode).source == "video":
        if image is not None and image.ndim == 4 and image.shape[0] < frames:  # said here, not at the sampler
            raise ValueError(f"image: expected a video of at least {frames} frames for {mode} (the frames input), "
                             f"got {image.shape[0]}; give a longer clip or set frames to {image.shape[0]} or fewer")
        image = None if image is None else image[:frames]
        if mask is not None and mask.ndim == 3 and mask.shape[0] > 1:
            mask = mask[:frames]
    if width or height:
        if not (width and height):
            raise ValueError(f"width/height: expected both set (or both 0 to keep the image's size), got "
                             f"{width}x{height}")
        if image is not None and tuple(image.shape[1:3]) != (height, width):
            image = resize(image.movedim(-1, 1), width, height).movedim(1, -1)
        if mask is not None and tuple(mask.shape[-2:]) != (height, width):
            m = mask[None] if mask.ndim == 2 else mask
            m = resize(m[:, None].float(), width, height)[:, 0]
            mask = m[0] if mask.ndim == 2 else m
    return image, mask


def resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(N, C, H, W) centre-cropped to the aspect and resized: an area average where it shrinks (antialiased: a
    10x downscale of a photo does not alias), bilinear where it grows."""
    shrink = width <= x.shape[-1] and height <= x.shape[-2]
    return comfy.utils.common_upscale(x, width, height, "area" if shrink else "bilinear", "center")


def pad_input(name: str, side: str) -> io.Int.Input:
    return io.Int.Input(name, default=0, min=0, max=4096, step=4,
                        tooltip=f"outpaint only: pixels added on the {side}.")


class LumiereConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereConditioning",
            **aliases("LumiereConditioning"),
            display_name="Lumiere Conditioning (masked video)",
            category="Lumiere/conditioning",
            description="Builds Lumiere's masked conditioning <C, M> (M = 1 on known pixels) and attaches it to "
                        "positive and negative; outputs the matching video latent for the sampler (with "
                        "replace_known: the known pixels and a noise mask, so they are kept exactly).",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Prompt conditioning from CLIP Text Encode."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning from CLIP Text Encode."),
                io.Combo.Input("mode", options=MODES, default="image_to_video",
                               tooltip="image_to_video: the clip starts at the image. inpaint: regenerate the "
                                       "masked area of a video. outpaint: extend the canvas by the pads. "
                                       "cinemagraph: animate only the masked area of a still. keyframes: the "
                                       "images of the batch at the frames given by indices, everything between "
                                       "generated (two images at 0, -1: interpolation). extend: the clip, then "
                                       "new frames up to frames. direct: the image frames are C and the mask is "
                                       "1 - M."),
                io.Int.Input("frames", default=16, min=1, max=4096,
                             tooltip="image_to_video/cinemagraph/keyframes/extend: frames of the output (a "
                                     "multiple of the model's frame multiple; beyond the model's own frame count, "
                                     "sample with the Lumiere Long Video Sampler). inpaint/outpaint/direct: the "
                                     "first this many frames of the video are used (a shorter video is an error)."),
                io.Image.Input("image", optional=True,
                               tooltip="A still (first image of the batch) for image_to_video/cinemagraph, the "
                                       "keyframes (one per index) for keyframes, the clip to continue for extend, "
                                       "or the video frames [T, H, W, 3] for inpaint/outpaint/direct."),
                io.Mask.Input("mask", optional=True,
                              tooltip="1 = generate / animate, 0 = keep (ComfyUI's mask convention), the size of "
                                      "the image, one mask for all frames or one per frame. Not used by "
                                      "image_to_video and outpaint."),
                pad_input("pad_left", "left"),
                pad_input("pad_right", "right"),
                pad_input("pad_top", "top"),
                pad_input("pad_bottom", "bottom"),
                io.Boolean.Input("replace_known", default=True, optional=True,
                                 tooltip="Keep the given pixels exactly (the image on frame 0, the area outside "
                                         "the mask): at every step they are put back, noised to the current "
                                         "level, and the final video is composited with them (through the "
                                         "latent's noise mask, so core KSampler honours it too). Off: the model "
                                         "alone decides, guided by <C, M>. A soft (grey) mask blends."),
                io.String.Input("indices", default="0, -1", optional=True,
                                tooltip="keyframes only: the frame of each image of the batch, in order, separated "
                                        "by commas; negative counts from the end (0, -1 = first and last)."),
                io.Int.Input("width", default=FIT_SIZE, min=0, max=4096, step=8, optional=True,
                             tooltip="Fit the image(s) and mask to this width first (centre crop to the aspect, "
                                     "as core Image Scale; an area average where it shrinks). Default 32: the "
                                     "shipped demo models' size; connect the Lumiere Loader's width to fit any "
                                     "model. 0 keeps the media's own size (a photo is then sampled at full size)."),
                io.Int.Input("height", default=FIT_SIZE, min=0, max=4096, step=8, optional=True,
                             tooltip="Fit to this height first. Default 32 (the demo models'); connect the Lumiere "
                                     "Loader's height to fit any model; 0 keeps the media's own size."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
                io.Latent.Output(display_name="latent",
                                 tooltip="A video latent of the conditioning's shape: empty, or with replace_known "
                                         "the known pixels plus a noise_mask (1 = generate)."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, mode, frames, image=None, mask=None, pad_left=0, pad_right=0, pad_top=0,
                pad_bottom=0, replace_known=True, indices="0, -1", width=FIT_SIZE, height=FIT_SIZE) -> io.NodeOutput:
        if mask is not None:
            check_finite(mask, "mask")
        image, mask = fit_inputs(image, mask, mode, frames, width, height)
        if image is not None and image.ndim == 4:
            check_latent_memory((1, 3, frames, image.shape[1] + pad_top + pad_bottom,
                                 image.shape[2] + pad_left + pad_right), "image",
                                "fit it to the model: set width / height (the Lumiere Loader's outputs)",
                                made_channels=8)  # C, M, the latent and its noise mask
        C, M = build_cm(mode, image, mask, frames, (pad_left, pad_right, pad_top, pad_bottom), indices)
        cond = recipes.pack(C, M).to(mm.intermediate_device())  # (1, 4, T, H, W)
        positive = node_helpers.conditioning_set_values(positive, {COND_KEY: cond})
        negative = node_helpers.conditioning_set_values(negative, {COND_KEY: cond})
        if not replace_known:
            return io.NodeOutput(positive, negative, {"samples": torch.zeros_like(cond[:, :3])})
        K, W = known_pixels(mode, image, mask, C, M)
        K, W = K.to(cond.device), W.to(cond.device)
        # the samples start as the known pixels (zero where nothing is known, as an empty latent)
        latent = {"samples": K * (W > 0), "noise_mask": 1 - W}  # noise_mask (1, 1, T, H, W): 1 = generate
        return io.NodeOutput(positive, negative, latent)


NODES = [LumiereConditioning]
