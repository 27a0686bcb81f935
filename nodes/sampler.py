"""The STUNet sampler: core sampling over the whole clip at once, with core previews (every frame) and Cancel."""
from __future__ import annotations

import torch

import comfy.model_management as mm
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import latent_preview
from comfy_api.latest import io

from ..lumiere.diffusion.known import composite_known
from ..lumiere.multidiffusion import DEFAULT_FUSE, FUSE_METHODS
from ..lumiere.pipeline import sampling_defaults
from .comfy_model import SEGMENT_KEY, check_base_model, check_memory, check_video_shape, lumiere_config
from .latent import check_finite
from .search import aliases


def sampling_callback(model, steps: int):
    """Core's sampling callback (progress bar + previews as the user's --preview-method says: Latent2RGB on the
    pixel latent shows every frame in one grid, through the latent format's reshape), with Cancel checked at
    every step."""
    core = latent_preview.prepare_callback(model, steps)

    def callback(step, x0, x, total_steps):
        mm.throw_exception_if_processing_interrupted()
        core(step, x0, x, total_steps)

    return callback


FIT_HINT = ("fit the video to the model (width / height / frames on Lumiere Conditioning or Lumiere Empty Video), "
            "or sample long videos with the Lumiere Long Video Sampler")


def run_sampler(model, latent: dict, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise=1.0):
    """comfy.sample.sample on a video latent (the body of core KSampler, with our callback).

    A latent "noise_mask" (1 = generate) is honoured as core does (the kept pixels are put back, noised, at every
    step), and then composited exactly: where the mask is 0 the output *is* the input latent, bit for bit."""
    samples = latent["samples"]
    noise_mask = latent.get("noise_mask")
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    out = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, samples,
                              denoise=denoise, noise_mask=noise_mask,
                              callback=sampling_callback(model, steps), disable_pbar=True, seed=seed)
    out = out.to(mm.intermediate_device())
    if not torch.isfinite(out).all():  # e.g. fp16 overflow: refuse rather than pass on a black / garbage video
        raise ValueError("model: sampling produced NaN or infinite values; load the model with weight_dtype fp32 "
                         "(or bf16), or lower cfg")
    if noise_mask is not None:  # the mask as core sampling reshapes it: (B, C, T, H, W)
        generate = comfy.sampler_helpers.prepare_mask(noise_mask, out.shape, out.device)
        out = composite_known(out, samples.to(out), 1 - generate)
    return out


# the library's sampler / noise-schedule names -> core's (KSampler's combos) giving the same steps on Lumiere's
# model sampling (ModelSamplingContinuousV): core 'normal' is linspace in the cosine time t from sigma_max to
# sigma_min (the library's 'uniform'); core 'sgm_uniform' drops the last point and appends 0, which is the
# library's 'trailing' grid a distilled model is trained on (equal to 1e-5 relative; tests/comfy/test_distilled.py)
CORE_SCHEDULERS = {"uniform": "normal", "trailing": "sgm_uniform", "karras": "karras"}


def core_sampling(config) -> dict:
    """The model's default sampling (`lumiere.pipeline.sampling_defaults`: what a distilled checkpoint records in
    `sampling`, else 25 DDIM steps at cfg 4; an SSR's denoise) in core's names: steps, cfg, sampler_name,
    scheduler (+ denoise for an SSR)."""
    d = sampling_defaults(config)
    out = {"steps": int(d["steps"]), "cfg": float(d["cfg"]), "sampler_name": d["sampler"],
           "scheduler": CORE_SCHEDULERS[d["scheduler"]]}
    if "denoise" in d:
        out["denoise"] = float(d["denoise"])
    return out


def describe_sampling(config) -> str:
    """One phrase for the Loader's info: how the model is meant to be sampled (core names)."""
    c = core_sampling(config)
    rec = config.sampling.get("distilled")
    text = (f"sample it at {c['steps']} steps, cfg {c['cfg']:g}, sampler {c['sampler_name']}, scheduler "
            f"{c['scheduler']}" + (f", denoise {c['denoise']:g}" if "denoise" in c else ""))
    if rec:
        text = (f"distilled few-step model (from a {rec.get('teacher_steps')}-step, cfg {rec.get('teacher_cfg'):g} "
                f"teacher; guidance folded in): " + text + " (core KSampler or the Lumiere samplers with "
                "model_defaults on)")
    return text


def sampling_inputs() -> list:
    """seed, steps, cfg, sampler, scheduler: shared by the sampler and the SSR upscaler (widget order is part of
    saved workflows: append, never reorder)."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the initial noise; the same seed gives the same video."),
        io.Int.Input("steps", default=25, min=1, max=1000, tooltip="Denoising steps."),
        io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale; 1 disables guidance (half the compute)."),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="ddim",
                       tooltip="Core sampler (ddim = deterministic, as in the Lumiere paper)."),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                       tooltip="Core noise schedule; 'normal' spaces steps evenly in the cosine time t."),
    ]


def window_inputs() -> list:
    """window, overlap, fuse: the temporal MultiDiffusion windows of the Long Video Sampler and the SSR upscaler,
    one convention (`multidiffusion.resolve_window`) and one default fuse (widget order is part of saved workflows:
    append, never reorder)."""
    return [
        io.Int.Input("window", default=0, min=0, max=4096,
                     tooltip="Frames per window (a multiple of the model's frame multiple); 0 = the model's own "
                             "frame count (what it was trained on)."),
        io.Int.Input("overlap", default=0, min=0, max=4095,
                     tooltip="Frames shared by consecutive windows (>= 2, < window); 0 = half the window."),
        io.Combo.Input("fuse", options=list(FUSE_METHODS), default=DEFAULT_FUSE,
                       tooltip="How overlapping windows are averaged: ramped (windows fade into each other, "
                               "smoother prompt changes) or flat (equal weights)."),
    ]


class LumiereSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereSampler",
            **aliases("LumiereSampler"),
            display_name="Lumiere STUNet Sampler",
            category="Lumiere/sampling",
            description="Denoises all frames of the clip together with the STUNet (no temporal windows), through "
                        "core samplers; previews show every frame; Cancel stops it at the next step.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumiere base MODEL from the Lumiere loader (optionally stylized)."),
                io.Conditioning.Input("positive", tooltip="Prompt conditioning (CLIP Text Encode or Lumiere "
                                                          "Conditioning)."),
                io.Conditioning.Input("negative", tooltip="Negative / unconditional conditioning (often the empty "
                                                          "prompt)."),
                io.Latent.Input("latent", tooltip="Video latent [B, 3, T, H, W]: Lumiere Empty Video, Lumiere "
                                                  "Conditioning, or Lumiere Frames to Latent for video-to-video."),
                *sampling_inputs(),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1 = from pure noise; < 1 keeps the input latent's structure (SDEdit)."),
                io.Boolean.Input("model_defaults", default=False, optional=True,
                                 tooltip="Sample at the model's own settings instead of the steps / cfg / "
                                         "sampler / scheduler widgets: what a distilled checkpoint records (e.g. "
                                         "4 steps, cfg 1, ddim, sgm_uniform), else 25 steps, cfg 4, ddim, normal. "
                                         "The Loader's info says them."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, steps, cfg, sampler_name, scheduler,
                denoise=1.0, model_defaults=False) -> io.NodeOutput:
        check_base_model(model)
        if model_defaults:
            d = core_sampling(lumiere_config(model))
            steps, cfg, sampler_name, scheduler = d["steps"], d["cfg"], d["sampler_name"], d["scheduler"]
        check_video_shape(model, tuple(latent["samples"].shape), "latent")
        check_memory(model, tuple(latent["samples"].shape), "latent", FIT_HINT)
        check_finite(latent["samples"], "latent")
        if len({c[1][SEGMENT_KEY] for c in positive if SEGMENT_KEY in c[1]}) > 1:
            raise ValueError("positive: a prompt schedule (Lumiere Prompt Schedule) changes the prompt between "
                             "windows; sample it with the Lumiere Long Video Sampler")
        m = model.clone()
        m.model_options.pop("context_handler", None)  # the base STUNet sees the whole clip at once
        samples = run_sampler(m, latent, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise)
        return io.NodeOutput({**latent, "samples": samples})


NODES = [LumiereSampler]
