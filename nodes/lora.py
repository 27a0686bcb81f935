"""Motion LoRA on your own clips: a folder of captioned clips as training data, and a trainer that puts core's LoRA
adapters (comfy.weight_adapter) on a Lumiere MODEL and fits them with the model's own objective
(`lumiere.lora.train_adapters`). The LORA_MODEL it gives is core's: saved by core Save LoRA Weights, read by core
LoraLoaderModelOnly, applied in the graph by core Load LoRA Model."""
from __future__ import annotations

import os

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy.weight_adapter import adapter_maps
from comfy_api.latest import io

from ..lumiere.data.folder import VIDEO_EXTENSIONS, decode_video
from ..lumiere.lora import train_adapters
from ..lumiere.models.stunet import STUNet
from .comfy_model import COND_KEY, check_base_model, check_video_shape, lumiere_config, lumiere_net
from .conditioning import resize
from .latent import check_latent_memory, latent_video
from .search import aliases

LORA_MODEL = io.Custom("LORA_MODEL")  # core's type (comfy_extras/nodes_train.py): Save LoRA Weights, Load LoRA Model
LOSS_MAP = io.Custom("LOSS_MAP")  # core's type: Plot Loss Graph
NET_PREFIX = "diffusion_model.net."
# which layers get adapters: the STUNet's own (temporal) layers only, as motion LoRAs do, or every layer
LAYERS = {"temporal": lambda name: not name.startswith(NET_PREFIX + "unet."), "all": lambda name: True}


def register_trained_loras() -> None:
    """ComfyUI's output/loras (where core's Save LoRA Weights writes by default) as a `loras` folder too: a LoRA
    trained here is listed by Load LoRA / LoraLoaderModelOnly after a refresh, without moving files by hand."""
    path = os.path.join(folder_paths.get_output_directory(), "loras")
    if path not in folder_paths.get_folder_paths("loras"):
        folder_paths.add_model_folder_path("loras", path)


def autograd_copy(w: torch.Tensor) -> torch.Tensor:
    """A weight autograd can save: ComfyUI loads models under inference mode, and an inference tensor cannot take
    part in a backward pass (core's layers hand a weight wrapper their own copy of the weight; this keeps it)."""
    return w.clone() if w.is_inference() else w


def lora_adapters(patcher, rank: int, layers: str, seed: int) -> dict[str, torch.nn.Parameter]:
    """Core's LoRA adapter (trainable, fp32) on every selected layer's weight of 2 or more dimensions, added as a
    weight wrapper of `patcher` (the layers apply it when they read their weights); every other weight and every
    bias read through `autograd_copy`. -> core's LoRA state dict: `{layer}.lora_up.weight`,
    `{layer}.lora_down.weight`, `{layer}.alpha` (the keys Save LoRA Weights writes)."""
    state = {}
    with torch.random.fork_rng(devices=[]):  # core's create_train draws from torch's global generator: seed it here
        torch.manual_seed(seed)              # and leave ComfyUI's own generator state as it was
        add_adapters(patcher, rank, layers, state)
    return state


def add_adapters(patcher, rank: int, layers: str, state: dict) -> None:
    for name, m in patcher.model.named_modules():
        w = getattr(m, "weight", None)
        if not hasattr(m, "weight_function") or not isinstance(w, torch.Tensor):
            continue
        if w.ndim >= 2 and LAYERS[layers](name):
            adapter = adapter_maps["LoRA"].create_train(w, rank=rank, alpha=1.0).to(torch.float32)
            for key, p in adapter.named_parameters():
                state[f"{name}.{key}"] = p
            patcher.add_weight_wrapper(f"{name}.weight", adapter)
        else:
            patcher.add_weight_wrapper(f"{name}.weight", autograd_copy)
        if isinstance(getattr(m, "bias", None), torch.Tensor):
            patcher.add_weight_wrapper(f"{name}.bias", autograd_copy)


def text_contexts(positive, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(contexts (n, L, D), conditioning channels (n, k, t, h, w) or None) from a CONDITIONING of one entry per
    clip or one entry for all clips."""
    if len(positive) not in (1, n):
        raise ValueError(f"positive: expected one prompt for all clips or one per clip ({n}), got {len(positive)}")
    entries = positive * n if len(positive) == 1 else positive
    widths = {tuple(c[0].shape[1:]) for c in entries}
    if len(widths) != 1:
        raise ValueError(f"positive: expected prompts encoded alike (same tokens and width), got shapes "
                         f"{sorted(widths)}")
    contexts = torch.cat([c[0][:1] for c in entries]).float()
    conds = [c[1].get(COND_KEY) for c in entries]
    if all(c is None for c in conds):
        return contexts, None
    if any(c is None for c in conds):
        raise ValueError("positive: expected Lumiere Conditioning on every prompt or on none, got a mix")
    return contexts, torch.cat([c[:1] for c in conds]).float()


class LumiereTrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereTrainLoRA",
            **aliases("LumiereTrainLoRA"),
            display_name="Lumiere Train Motion LoRA",
            category="Lumiere/training",
            description="Trains a LoRA on a Lumiere base MODEL from a few clips and their prompts, with the "
                        "model's own objective (v-prediction on its noise schedule, as it was trained). The "
                        "adapters are core's LoRA: save the result with Save LoRA Weights (to ComfyUI's output/loras, "
                        "which this pack lists for LoraLoaderModelOnly / Load LoRA after a refresh), or apply it at "
                        "once with Load LoRA Model. Progress bar; Cancel stops it at the next step.",
            inputs=[
                io.Model.Input("model", tooltip="A Lumiere base MODEL (the Lumiere Loader's); loaded in fp32 for "
                                                "training is best."),
                io.Latent.Input("clips", tooltip="The training clips as one video latent [N, 3, T, H, W] at the "
                                                 "model's size: Lumiere Load Clip Folder, or Lumiere Frames to "
                                                 "Latent for one loaded video."),
                io.Conditioning.Input("positive", tooltip="Their prompts: one per clip (Lumiere Load Clip Folder) "
                                                          "or one for all (CLIP Text Encode)."),
                io.Int.Input("steps", default=200, min=1, max=100000, tooltip="Optimiser steps."),
                io.Float.Input("learning_rate", default=0.003, min=1e-7, max=1.0, step=1e-5, round=1e-7,
                               tooltip="AdamW learning rate of the LoRA weights."),
                io.Int.Input("rank", default=8, min=1, max=128, tooltip="Rank of each LoRA (alpha 1, as core's "
                                                                        "trainer)."),
                io.Combo.Input("layers", options=list(LAYERS), default="temporal",
                               tooltip="temporal: the STUNet's space-time layers only (a motion LoRA: the "
                                       "look of the frames stays the base model's). all: every layer."),
                io.Int.Input("batch_size", default=2, min=1, max=64, tooltip="Clips per step."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the LoRA's initial weights, the clips drawn, noise levels and noise."),
            ],
            outputs=[
                LORA_MODEL.Output(display_name="lora", tooltip="The LoRA weights (core's LORA_MODEL)."),
                LOSS_MAP.Output(display_name="loss_map", tooltip="The loss of every step (core Plot Loss Graph)."),
                io.Int.Output(display_name="steps", tooltip="Steps trained (for Save LoRA Weights' file name)."),
            ],
        )

    @classmethod
    def execute(cls, model, clips, positive, steps, learning_rate, rank, layers, batch_size, seed) -> io.NodeOutput:
        check_base_model(model)
        if not isinstance(lumiere_net(model), STUNet):
            raise ValueError("model: expected a Lumiere video model (base STUNet), got a text-to-image U-Net")
        if layers not in LAYERS:
            raise ValueError(f"layers: expected one of {list(LAYERS)}, got {layers!r}")
        video = latent_video(clips, "clips")
        check_video_shape(model, tuple(video.shape), "clips")
        cfg = lumiere_config(model)
        contexts, cond = text_contexts(positive, video.shape[0])
        k = cfg.cond_channels
        if cond is not None and (cond.shape[1] != k or cond.shape[2:] != video.shape[2:]):
            raise ValueError(f"positive: expected Lumiere Conditioning of {k} channels for the clips' "
                             f"{list(video.shape[2:])} (frames, height, width), got {cond.shape[1]} channels for "
                             f"{list(cond.shape[2:])}")
        if cond is None and k:
            cond = video.new_zeros(video.shape[0], k, *video.shape[2:])  # text-to-video: nothing known
        patcher = model.clone()
        with torch.inference_mode(False), torch.enable_grad():
            state = lora_adapters(patcher, rank, layers, seed)
            if not state:
                raise ValueError(f"layers: expected layers with weights to adapt, got none for {layers!r}")
            patcher.model.requires_grad_(False)  # the model's own weights stay as they are (as core's trainer)
            mm.load_models_gpu([patcher], force_full_load=True)
            device = patcher.load_device
            params = [p for key, p in state.items() if not key.endswith(".alpha")]
            net = patcher.model.diffusion_model
            dtype = patcher.model.manual_cast_dtype or patcher.model.get_dtype()
            bar = comfy.utils.ProgressBar(steps)

            def step_done(step, loss):
                bar.update_absolute(step + 1, steps)
                mm.throw_exception_if_processing_interrupted()

            # the inputs as plain copies (inference tensors cannot join autograd)
            video, contexts = video.to(device).clone(), contexts.to(device).clone()
            cond = None if cond is None else cond.to(device).clone()
            losses = train_adapters(lambda x, t, ctx: net(x.to(dtype), t, ctx.to(dtype)), params, video, contexts,
                                    cond, cfg.sigma_min, cfg.sigma_max, steps, learning_rate, batch_size, seed,
                                    step_done)
            lora = {key: p.detach().to("cpu", torch.float32).clone() for key, p in state.items()}
        return io.NodeOutput(lora, {"loss": losses}, steps)


def input_folder(folder: str) -> str:
    """A folder inside ComfyUI's input folder (the only place clips are read from), or a ValueError naming it."""
    root = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(root, folder))
    if not folder or os.path.commonpath([root, path]) != root or not os.path.isdir(path):
        raise ValueError(f"folder: expected a folder inside ComfyUI's input folder {root}, got {folder!r}")
    return path


def load_clips(path: str, frames: int, width: int, height: int, fps: float) -> tuple[torch.Tensor, list[str]]:
    """Every video of a folder (not its sub-folders), in name order, with its caption (`name.txt` beside it,
    empty if none): the first `frames` frames at `fps` (0: as stored), fitted to width x height (centre crop,
    area average where it shrinks). -> (clips (n, 3, frames, height, width) in -1..1, captions)"""
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(VIDEO_EXTENSIONS)
                   and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise ValueError(f"folder: expected videos ({', '.join(VIDEO_EXTENSIONS)}) with .txt captions beside "
                         f"them, got none in {path}")
    check_latent_memory((len(files), 3, frames, height, width), "folder", "train on fewer clips or frames")
    clips, captions = [], []
    for name in files:
        try:
            video = decode_video(os.path.join(path, name), fps or None)  # (3, t, h, w) in -1..1
        except (ValueError, ImportError) as e:  # undecodable, or no PyAV for that container
            raise ValueError(f"folder: expected videos this ComfyUI can decode, got {name}: {e}") from None
        if video.shape[1] < frames:
            raise ValueError(f"folder: expected clips of at least {frames} frames"
                             f"{f' at {fps:g} fps' if fps else ''}, got {video.shape[1]} in {name}")
        video = video[:, :frames]
        if tuple(video.shape[2:]) != (height, width):
            video = resize(video.movedim(1, 0), width, height).movedim(0, 1)
        clips.append(video.clamp(-1, 1))
        caption = os.path.join(path, os.path.splitext(name)[0] + ".txt")
        captions.append(open(caption, encoding="utf-8").read().strip() if os.path.isfile(caption) else "")
    return torch.stack(clips).to(mm.intermediate_device()), captions


def encode_captions(clip, captions: list[str]) -> list:
    """One CONDITIONING entry per caption, as CLIP Text Encode makes it."""
    if clip is None:
        raise ValueError("clip: expected a CLIP (the Lumiere Loader's, or the text encoder the model was trained "
                         "with), got None")
    return [entry for text in captions for entry in clip.encode_from_tokens_scheduled(clip.tokenize(text))]


class LumiereLoadClipFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereLoadClipFolder",
            **aliases("LumiereLoadClipFolder"),
            display_name="Lumiere Load Clip Folder",
            category="Lumiere/training",
            description="Training data from a folder of short clips in ComfyUI's input folder: every video "
                        "(.webp/.gif; .mp4/.webm/.mov/.mkv/.avi with PyAV) with its caption in a .txt of the same "
                        "name, fitted to the model's frames and size, and the captions encoded for Lumiere Train "
                        "Motion LoRA.",
            inputs=[
                io.Combo.Input("folder", options=folder_paths.get_input_subfolders(),
                               tooltip="A folder inside ComfyUI's input folder."),
                io.Clip.Input("clip", tooltip="Encodes the captions: the Lumiere Loader's CLIP."),
                io.Int.Input("frames", default=16, min=1, max=4096,
                             tooltip="Frames per clip: the first this many (connect the Lumiere Loader's frames)."),
                io.Int.Input("width", default=32, min=8, max=4096, step=8,
                             tooltip="Frame width (connect the Lumiere Loader's width)."),
                io.Int.Input("height", default=32, min=8, max=4096, step=8,
                             tooltip="Frame height (connect the Lumiere Loader's height)."),
                io.Float.Input("fps", default=8.0, min=0.0, max=240.0, step=0.5,
                               tooltip="Resample each clip to this frame rate (connect the Lumiere Loader's "
                                       "fps); 0 keeps every stored frame."),
            ],
            outputs=[
                io.Latent.Output(display_name="clips", tooltip="The clips as one video latent [N, 3, T, H, W]."),
                io.Conditioning.Output(display_name="positive", tooltip="Their captions, one entry per clip."),
                io.String.Output(display_name="captions", tooltip="The captions, one per line."),
            ],
        )

    @classmethod
    def execute(cls, folder, clip, frames, width, height, fps) -> io.NodeOutput:
        clips, captions = load_clips(input_folder(folder), frames, width, height, fps)
        return io.NodeOutput({"samples": clips}, encode_captions(clip, captions), "\n".join(captions))


NODES = [LumiereLoadClipFolder, LumiereTrainLoRA]
