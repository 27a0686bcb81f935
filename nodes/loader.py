"""Loading Lumiere checkpoints from the `lumiere` model folder as core MODEL and CLIP objects."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from .comfy_model import WEIGHT_DTYPES, build_clip, load_model_patcher
from .sampler import describe_sampling
from .search import aliases

FOLDER = "lumiere"
PACK_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "lumiere")


def register_model_folder() -> None:
    """`lumiere` = the pack's own models/lumiere (shipped demo models, listed with no user action) + the standard
    <models_dir>/lumiere (+ any extra_model_paths.yaml entry). Only .safetensors: a new key would list every file."""
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    user_models = os.path.join(folder_paths.models_dir, FOLDER)
    try:  # the place for users' own checkpoints (it survives updates of the pack, unlike the pack's folder)
        os.makedirs(user_models, exist_ok=True)
    except OSError:
        pass  # a read-only models folder: listing still works
    for p in (PACK_MODELS, user_models):
        if p not in paths:
            paths.append(p)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, {".safetensors"})


def model_input(name: str, tooltip: str) -> io.Combo.Input:
    return io.Combo.Input(name, options=folder_paths.get_filename_list(FOLDER), tooltip=tooltip)


def model_path(name: str, input_name: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise FileNotFoundError(f"{input_name}: no file {name!r} in the lumiere model folders "
                                f"{folder_paths.get_folder_paths(FOLDER)}")
    return path


class LumiereLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LumiereLoader",
            **aliases("LumiereLoader"),
            display_name="Lumiere Loader",
            category="Lumiere/loaders",
            description="Loads a Lumiere checkpoint (base STUNet, SSR or T2I): MODEL for Lumiere or core samplers, "
                        "CLIP for core CLIP Text Encode, the clip shape it was trained for, and what it knows. "
                        "The shipped demo models are small (32x32 px, 16 frames, 8 fps; SSR to 64x64) and know one "
                        "domain only: one shape (circle, square, triangle) of one of six colours moving left, "
                        "right, up or down on black, gray or white, e.g. 'a red circle moving left on black'. "
                        "Other words are unknown to them (a warning names them); a photo is not their domain. "
                        "A distilled few-step checkpoint (lumiere_demo_base_4step) records how it is sampled; `info` "
                        "says it (core KSampler: 4 steps, cfg 1, ddim, sgm_uniform).",
            inputs=[model_input("ckpt_name", "A .safetensors Lumiere checkpoint from models/lumiere (the pack's own "
                                             "folder or ComfyUI's models/lumiere)."),
                    io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default", optional=True,
                                   tooltip="Precision of the network's weights and compute. default: ComfyUI's "
                                           "choice for the device. bf16: about 1.8x faster on CPUs with bf16 "
                                           "units and half the memory, frames ~50 dB PSNR from fp32. fp8_e4m3fn / "
                                           "fp8_e5m2: weights stored in 8 bits (a quarter of fp32), each layer "
                                           "cast to ComfyUI's compute dtype for the device when it runs (on a "
                                           "CPU: fp32; no faster, less memory). fp16 is not offered (pixel-space "
                                           "v-prediction overflows it).")],
            outputs=[
                io.Model.Output(display_name="MODEL"),
                io.Clip.Output(display_name="CLIP", tooltip="Its built-in text encoder (None for models that take "
                                                            "external embeddings)."),
                io.Int.Output(display_name="frames", tooltip="Frames per clip the model was trained on."),
                io.Int.Output(display_name="width", tooltip="Frame width the model was trained on."),
                io.Int.Output(display_name="height", tooltip="Frame height the model was trained on."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of its training clips (FLOAT, as core "
                                                            "CreateVideo takes it)."),
                io.String.Output(display_name="info", tooltip="What the checkpoint knows: role, size, frames, how "
                                                              "it is meant to be sampled (a distilled few-step "
                                                              "model's steps, cfg, sampler and scheduler) and the "
                                                              "text encoder's vocabulary (connect a Preview Any or "
                                                              "a text display node to read it)."),
            ],
        )

    @classmethod
    def execute(cls, ckpt_name, weight_dtype="default") -> io.NodeOutput:
        path = model_path(ckpt_name, "ckpt_name")
        model, config, state = load_model_patcher(path, weight_dtype)
        clip = build_clip(path, config, state)
        size = config.resolution
        return io.NodeOutput(model, clip, config.num_frames, size, size, float(config.fps), model_info(config))


def model_info(config) -> str:
    """One paragraph on what a checkpoint is and knows, for the Loader's `info` output."""
    text = (f"built-in text encoder, {config.text.max_tokens - 1} words per prompt at most; vocabulary: "
            + " ".join(config.text.vocab) if config.text.kind == "builtin"
            else f"external text embeddings of width {config.text.width} (use a core text-encoder loader)")
    return (f"Lumiere {config.role} checkpoint ({config.preset} preset): {config.resolution}x{config.resolution} px, "
            f"{config.num_frames} frames at {config.fps} fps" + (f", x{config.scale} super-resolution"
                                                                  if config.role == "ssr" else "")
            + f"; {describe_sampling(config)}; {text}" + trained_on(config) + ".")


def trained_on(config) -> str:
    """What the checkpoint's last training run drew its clips from (its notes), as '; knows ...' or ''."""
    data = config.notes.get("data") or {}
    kind = {"procedural": "flat coloured shapes moving on plain backgrounds (the pack's procedural clips)",
            "real": "real footage and photos (camera-captioned: 'a video', 'a photo')",
            "folder": "the captioned videos of a folder"}.get(data.get("kind"))
    if kind is None:
        return ""
    extras = [what for key, what in (("camera", "camera pans and zooms over still images"),
                                     ("long_motion", "motion spanning the whole clip (swings, orbits, crossings)"))
              if data.get(key)]
    return "; knows " + kind + "".join(f", {e}" for e in extras)


NODES = [LumiereLoader]
