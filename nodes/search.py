"""Words users type in the node search that are not in a node's name: one table, read by every schema.

ComfyUI newer than 0.3.75 takes `search_aliases` on a V3 schema and its front-end searches them; 0.3.75's
front-end (1.32) searches the name and display name only, so there the aliases are left out of the schema."""
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
}
SCHEMA_TAKES_ALIASES = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}


def aliases(node_id: str) -> dict:
    """`search_aliases=[...]` for the node's io.Schema where this ComfyUI takes them; {} where it does not."""
    return {"search_aliases": list(SEARCH_ALIASES[node_id])} if SCHEMA_TAKES_ALIASES else {}
