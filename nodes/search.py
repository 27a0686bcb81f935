"""Words users type in the node search that are not in a node's name: one table, read by every schema.

A ComfyUI whose `io.Schema` has a `search_aliases` field (0.33.0) takes them and its front-end searches them; where
it has none (0.3.75, 0.8.0) they are left out of the schema and the search matches the name and display name."""
from __future__ import annotations

import dataclasses

from comfy_api.latest import io

SEARCH_ALIASES: dict[str, tuple[str, ...]] = {
    "LumiereLoader": ("lumiere checkpoint", "load video model", "space-time unet"),
    "LumiereSampler": ("text to video", "video sampler", "ksampler video", "stunet"),
    "LumiereLongSampler": ("long video", "prompt travel", "loop video", "multidiffusion", "context windows"),
    "LumierePromptSchedule": ("prompt travel", "prompt schedule", "keyframed prompts"),
    "LumiereConditioning": ("image to video", "img2vid", "i2v", "inpaint video", "video inpainting",
                            "outpaint video", "cinemagraph", "interpolate frames", "keyframes", "extend video"),
    "LumiereSSRUpscale": ("video upscale", "upscale video", "super resolution", "ssr"),
    "LumiereStylize": ("video style", "stylize video", "style transfer"),
    "LumiereEmptyVideo": ("empty video latent", "empty latent video"),
    "LumiereFramesToLatent": ("video to video", "vid2vid", "images to latent"),
    "LumiereLatentToFrames": ("latent to images", "decode video"),
    "LumiereTrainLoRA": ("train lora", "motion lora", "lora training", "fine-tune video"),
    "LumiereLoadClipFolder": ("video dataset", "training clips", "load clips", "captioned videos"),
}
SCHEMA_TAKES_ALIASES = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}


def aliases(node_id: str) -> dict:
    """`search_aliases=[...]` for the node's io.Schema where this ComfyUI takes them; {} where it does not."""
    return {"search_aliases": list(SEARCH_ALIASES[node_id])} if SCHEMA_TAKES_ALIASES else {}
