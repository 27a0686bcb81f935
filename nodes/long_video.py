"""Long videos, seamless loops and prompt travel: the base STUNet over temporal MultiDiffusion windows.

The windows and their fusion weights are the library's (`lumiere.multidiffusion.time_windows`, as
`pipeline.generate_long`); here they run inside core sampling as a core context handler, so the latent's noise mask
(known pixels), previews, the progress bar and Cancel (between windows) work as with the plain sampler. A prompt
schedule is a core CONDITIONING whose entries carry the first frame of their segment: each window is denoised with
the entries of the segment its centre frame falls in, and the overlaps blend neighbouring prompts.
"""
from __future__ import annotations

import torch

import comfy.context_windows
import comfy.model_management as mm
import node_helpers
from comfy_api.latest import io

from ..lumiere.multidiffusion import DEFAULT_FUSE, resolve_window, time_windows
from ..lumiere.pipeline import parse_prompt_schedule, window_segment
from .comfy_model import SEGMENT_KEY, check_base_model, check_memory, check_video_shape, lumiere_config, take_frames
from .latent import check_finite
from .sampler import run_sampler, sampling_inputs, window_inputs
from .search import aliases


def schedule_of(conds: list[dict]) -> list[tuple[int, int]]:
    """Sorted distinct segment starts of the entries that carry one, as (start, entry count)."""
    starts = sorted({c[SEGMENT_KEY] for c in conds if SEGMENT_KEY in c})
    return [(s, sum(1 for c in conds if c.get(SEGMENT_KEY) == s)) for s in starts]


def entries_for_window(conds: list[dict] | None, frames: list[int]) -> list[dict] | None:
    """The cond entries that apply to a window: those without a segment, and those of the segment its centre frame
    falls in (`pipeline.window_segment`, the library's rule)."""
    if conds is None:
        return None
    schedule = schedule_of(conds)
    if not schedule:
        return conds
    start = schedule[window_segment(schedule, frames)][0]
    return [c for c in conds if c.get(SEGMENT_KEY, start) == start]


class FrameWindow(comfy.context_windows.ContextWindowABC):
    """One temporal window of a clip: its frame indices along `dim`. The pack's own (core's IndexListContextWindow
    changed its constructor between releases: 0.8 added `total_frames`, a division by it, and more); it offers the
    `index_list`, `get_tensor` and `add_window` that core's context-window code and the pack use."""

    def __init__(self, index_list: list[int], dim: int, total_frames: int):
        super().__init__()
        if not index_list or total_frames < 1:
            raise ValueError(f"window: expected frame indices within a clip of >= 1 frame, got {index_list} "
                             f"of {total_frames}")
        self.index_list, self.dim, self.total_frames = list(index_list), dim, total_frames
        self.context_length = len(self.index_list)
        self.center_ratio = (min(self.index_list) + max(self.index_list)) / (2 * total_frames)

    def get_tensor(self, full: torch.Tensor, device=None, dim=None, retain_index_list=()) -> torch.Tensor:
        dim = self.dim if dim is None else dim
        window = full[(slice(None),) * dim + (self.index_list,)]
        if retain_index_list:
            idx = (slice(None),) * dim + (list(retain_index_list),)
            window[idx] = full[idx]
        return window.to(device) if device is not None else window

    def add_window(self, full: torch.Tensor, to_add: torch.Tensor, dim=None) -> torch.Tensor:
        dim = self.dim if dim is None else dim
        full[(slice(None),) * dim + (self.index_list,)] += to_add
        return full


class LumiereWindows(comfy.context_windows.ContextHandlerABC):
    """Core context handler: every model call of a step runs window by window (`time_windows`), weighted and
    fused; with `loop` the windows lie on a circle (the last frame flows into the first)."""

    def __init__(self, window: int, overlap: int, fuse: str, loop: bool):
        super().__init__()
        self.window, self.overlap, self.fuse, self.loop = window, overlap, fuse, loop

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        return True

    def get_resized_cond(self, cond_in, x_in, window, device=None) -> list | None:
        return entries_for_window(cond_in, window.index_list)

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        length = x_in.shape[2]
        out = [torch.zeros_like(x_in) for _ in conds]
        total = torch.zeros(length, device=x_in.device, dtype=x_in.dtype)
        options = model_options["transformer_options"]
        try:
            for frames, weights in time_windows(length, self.window, self.overlap, self.fuse, self.loop):
                mm.throw_exception_if_processing_interrupted()  # Cancel between windows
                window = FrameWindow(frames, dim=2, total_frames=length)
                options["context_window"] = window  # LumiereModel slices the <C, M> channels with it
                sub_conds = [self.get_resized_cond(c, x_in, window) for c in conds]
                results = calc_cond_batch(model, sub_conds, take_frames(x_in, frames), timestep, model_options)
                index = torch.tensor(frames, device=x_in.device)
                w = weights.to(x_in.device, x_in.dtype)
                for o, r in zip(out, results):
                    o.index_add_(2, index, r * w.view(1, 1, -1, 1, 1))
                total.index_add_(0, index, w)
        finally:
            options.pop("context_window", None)
        return [o / total.view(1, 1, -1, 1, 1) for o in out]


class LumiereLongSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereLongSampler",
            **aliases("LumiereLongSampler"),
            display_name="Lumiere Long Video Sampler (windows, loop, prompt travel)",
            category="Lumiere/sampling",
            description="Samples a clip of any length with the base STUNet over overlapping temporal windows fused "
                        "at every step (MultiDiffusion): memory is one window's whatever the length. A prompt "
                        "schedule (Lumiere Prompt Schedule) changes the prompt over time; loop makes the last frame "
                        "flow into the first. Progress and previews cover the whole clip; Cancel stops between "
                        "windows.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumiere base MODEL from the Lumiere loader."),
                io.Conditioning.Input("positive", tooltip="Prompt conditioning: CLIP Text Encode, Lumiere Prompt "
                                                          "Schedule, or Lumiere Conditioning (keyframes, extend)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning (often the empty prompt)."),
                io.Latent.Input("latent", tooltip="Video latent [B, 3, T, H, W] of any frame count (Lumiere Empty "
                                                  "Video or Lumiere Conditioning)."),
                *sampling_inputs(),
                *window_inputs(),  # window, overlap, fuse, then loop (widget order is part of saved workflows)
                io.Boolean.Input("loop", default=False,
                                 tooltip="A seamless loop: the windows lie on a circle, some wrapping from the last "
                                         "frames to the first, so the last frame flows into the first. Works from "
                                         "one window's length up."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, steps, cfg, sampler_name, scheduler, window=0,
                overlap=0, fuse=DEFAULT_FUSE, loop=False) -> io.NodeOutput:
        frames = latent["samples"].shape[2]
        shape = tuple(latent["samples"].shape)
        check_base_model(model)
        check_video_shape(model, shape, "latent")
        starts = sorted({c[1][SEGMENT_KEY] for c in positive if SEGMENT_KEY in c[1]})
        if starts and starts[-1] >= frames:  # a segment no window would ever use
            raise ValueError(f"positive: expected prompt-schedule segments starting within the latent's {frames} "
                             f"frames (0-{frames - 1}), got start frame(s) {[s for s in starts if s >= frames]}; "
                             f"lengthen the latent (Lumiere Empty Video frames) or move them")
        window, overlap = resolve_window(frames, window, overlap, lumiere_config(model).num_frames, loop,
                                         check=lambda f, name: check_video_shape(model, (1, 3, f, *shape[3:]), name),
                                         name="latent")
        check_memory(model, (*shape[:2], min(window, frames), *shape[3:]), "latent",
                     "fit the frames to the model (width / height on Lumiere Conditioning or Lumiere Empty Video) or "
                     "use a shorter window", frames_total=frames)
        check_finite(latent["samples"], "latent")
        m = model.clone()
        m.model_options["context_handler"] = LumiereWindows(window, overlap, fuse, loop)
        samples = run_sampler(m, latent, seed, steps, cfg, sampler_name, scheduler, positive, negative)
        return io.NodeOutput({**latent, "samples": samples})


class LumierePromptSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumierePromptSchedule",
            **aliases("LumierePromptSchedule"),
            display_name="Lumiere Prompt Schedule (prompt travel)",
            category="Lumiere/conditioning",
            description="Encodes a prompt per segment of frames, \"0: a red circle moving right; 32: a red circle "
                        "moving up\", into one CONDITIONING for the Lumiere Long Video Sampler: each window takes "
                        "the prompt of the segment its centre frame falls in.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder (the Lumiere loader's CLIP, or a core one for "
                                              "checkpoints trained on its embeddings)."),
                io.String.Input("schedule", multiline=True,
                                default="0: a red circle moving right; 32: a red circle moving up",
                                tooltip="'FRAME: prompt' segments separated by ';' (or new lines); the first starts "
                                        "at frame 0. A plain prompt is one segment."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, clip, schedule) -> io.NodeOutput:
        if clip is None:
            raise ValueError("clip: expected a CLIP (text encoder), got none; the Lumiere loader outputs one")
        segments = parse_prompt_schedule(schedule.replace("\n", ";"))
        conditioning = []
        for start, prompt in segments:
            encoded = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
            conditioning += node_helpers.conditioning_set_values(encoded, {SEGMENT_KEY: start})
        return io.NodeOutput(conditioning)


NODES = [LumiereLongSampler, LumierePromptSchedule]
