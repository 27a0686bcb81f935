"""Spatial super-resolution with temporal MultiDiffusion (Lumiere Sec. 3.2), through core sampling."""
from __future__ import annotations

import logging

import torch

import comfy.model_management as mm
import node_helpers
from comfy_api.latest import io

from ..lumiere.multidiffusion import MultiDiffusionDenoiser, resolve_window
from ..lumiere.pipeline import SSR_DENOISE, upsample_video
from .comfy_model import COND_KEY, check_memory, check_video_shape, lumiere_config
from .latent import frames_to_video, latent_video, video_to_frames
from .sampler import core_sampling, run_sampler, sampling_inputs, window_inputs
from .search import aliases


def multidiffusion_wrapper(window: int, overlap: int, fuse: str):
    """A core `model_function_wrapper` that runs the net window by window and fuses the denoised windows with the
    library's MultiDiffusion; the up-sampled video (c_concat) is sliced with each window."""

    def wrapper(apply_model, args):
        c = dict(args["c"])
        cond = c.pop("c_concat", None)

        def denoise(x, sigma, cond=None):
            mm.throw_exception_if_processing_interrupted()  # Cancel between windows
            return apply_model(x, sigma, c_concat=cond, **c)

        return MultiDiffusionDenoiser(denoise, window, overlap, fuse, cond=cond)(args["input"], args["timestep"])

    return wrapper


class LumiereSSRUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereSSRUpscale",
            **aliases("LumiereSSRUpscale"),
            display_name="Lumiere SSR Upscale (MultiDiffusion)",
            category="Lumiere/sampling",
            description="Spatial super-resolution of a low-resolution clip by an SSR model, run on overlapping "
                        "temporal windows fused at every step (MultiDiffusion): model memory is bounded by one "
                        "window whatever the clip length.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumiere SSR MODEL from the Lumiere loader."),
                io.Conditioning.Input("positive", tooltip="Prompt conditioning (CLIP Text Encode with the SSR "
                                                          "model's CLIP)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (often the empty prompt)."),
                io.Image.Input("frames", optional=True,
                               tooltip="The low-resolution clip as IMAGE frames [T, H, W, 3] (one video: an IMAGE "
                                       "batch is one clip). For several videos at once, connect latent instead."),
                io.Int.Input("scale", default=2, min=1, max=16,
                             tooltip="Output size / input size; the SSR model was trained for one scale (its "
                                     "config), others work less well."),
                *window_inputs(),
                *sampling_inputs(),
                io.Float.Input("denoise", default=SSR_DENOISE, min=0.01, max=1.0, step=0.01, optional=True,
                               tooltip="Where sampling starts, as core samplers' denoise: 1 = from pure noise; "
                                       "below 1 from the bilinearly up-sampled clip noised to an intermediate "
                                       "level, so the output stays closer to the input (SDEdit). With the "
                                       "shipped demo SSR, 1.0 scores 0.45 dB higher than the default 0.3 "
                                       "against true high-res clips."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Instead of frames: a Lumiere video latent [B, 3, T, H, W] (e.g. the "
                                        "sampler's), whose B videos are upscaled apart (windows never straddle "
                                        "two videos)."),
                io.Boolean.Input("model_defaults", default=False, optional=True,
                                 tooltip="Upscale at the model's own settings instead of the steps / cfg / "
                                         "sampler / scheduler / denoise widgets: what a distilled SSR records "
                                         "(e.g. 2 steps, cfg 1, ddim, sgm_uniform, denoise 1), else 20 steps, "
                                         "cfg 1, ddim, normal, denoise 0.3. The Loader's info says them."),
            ],
            outputs=[io.Image.Output(display_name="frames",
                                     tooltip="The upscaled frames; several videos one after another."),
                     io.Latent.Output(display_name="latent", tooltip="The upscaled videos [B, 3, T, H, W].")],
        )

    @classmethod
    def execute(cls, model, positive, negative, scale, window, overlap, fuse, seed, steps, cfg, sampler_name,
                scheduler, frames=None, denoise=SSR_DENOISE, latent=None, model_defaults=False) -> io.NodeOutput:
        config = lumiere_config(model)
        if config.conditioning != "lowres":
            raise ValueError(f"model: expected an SSR checkpoint (conditioning 'lowres'), got a {config.role!r} "
                             f"model")
        if model_defaults:
            d = core_sampling(config)
            steps, cfg, sampler_name, scheduler, denoise = (d["steps"], d["cfg"], d["sampler_name"], d["scheduler"],
                                                            d["denoise"])
        if scale != config.scale:
            logging.warning("Lumiere SSR: scale %d differs from the %d the model was trained for", scale,
                            config.scale)
        if (frames is None) == (latent is None):
            raise ValueError("frames/latent: expected exactly one of them (IMAGE frames of one clip, or a video "
                             f"latent), got {'both' if frames is not None else 'neither'}")
        video = latent_video(latent) if latent is not None else frames_to_video(frames)
        b, _, t, h, w = video.shape
        # a clip no longer than the window is sampled whole: then the clip's frame count is the input to name
        window, overlap = resolve_window(t, window, overlap, config.num_frames,
                                         check=lambda f, name: check_video_shape(model, (1, 3, f, h * scale,
                                                                                         w * scale), name),
                                         name="frames" if latent is None else "latent")
        check_memory(model, (b, 3, min(window, t), h * scale, w * scale), "frames" if latent is None else "latent",
                     "upscale fewer or smaller frames, or use a shorter window", frames_total=t)
        lowres = upsample_video(video.float(), scale).to(mm.intermediate_device())  # (B, 3, T, H, W)
        positive = node_helpers.conditioning_set_values(positive, {COND_KEY: lowres})
        negative = node_helpers.conditioning_set_values(negative, {COND_KEY: lowres})
        m = model.clone()
        m.model_options.pop("context_handler", None)
        m.set_model_unet_function_wrapper(multidiffusion_wrapper(window, overlap, fuse))
        # denoise < 1: core sampling starts from the latent (the up-sampled clip) + noise at the level denoise
        # reaches, as `lumiere.pipeline.upscale(denoise=...)` (core runs all `steps` over the rest of the
        # schedule, the library round(steps * denoise) of them); at 1 from pure noise, as the library
        latent = {"samples": lowres.clone() if denoise < 1.0 else torch.zeros_like(lowres)}
        samples = run_sampler(m, latent, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise)
        samples = samples.clamp(-1, 1)
        return io.NodeOutput(video_to_frames(samples), {"samples": samples})


NODES = [LumiereSSRUpscale]
