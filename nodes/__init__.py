"""The ComfyUI surface of Lumiere: one module per node family, all V3 (comfy_api.latest)."""
from __future__ import annotations

import logging
import os
import shutil

import folder_paths
from comfy_api.latest import ComfyExtension, io

from . import conditioning, latent, loader, long_video, lora, sampler, ssr, stylize

EXAMPLE_INPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows", "inputs")

NODE_CLASSES: list[type[io.ComfyNode]] = [
    *loader.NODES, *sampler.NODES, *long_video.NODES, *conditioning.NODES, *ssr.NODES, *stylize.NODES, *latent.NODES,
    *lora.NODES,
]


def install_example_inputs() -> None:
    """Copy the bundled workflows' example image/video/mask/clip folder (`lumiere_example_*`) into ComfyUI's input folder where
    absent, so every bundled workflow runs as soon as the pack is installed and opens clean: the front-end lists a
    Load Image / Load Video file only from the input folder (newer front-ends outline any other value red). A file
    of that name already there is never overwritten."""
    if not os.path.isdir(EXAMPLE_INPUTS):
        return
    dest = folder_paths.get_input_directory()
    try:
        for name in sorted(os.listdir(EXAMPLE_INPUTS)):
            if name.startswith("lumiere_example_") and not os.path.exists(os.path.join(dest, name)):
                os.makedirs(dest, exist_ok=True)
                src = os.path.join(EXAMPLE_INPUTS, name)
                if os.path.isdir(src):  # a folder of clips (motion_lora's training data)
                    shutil.copytree(src, os.path.join(dest, name))
                else:
                    shutil.copyfile(src, os.path.join(dest, name))
    except OSError as e:  # an unwritable temp folder must not break the pack
        logging.warning("Lumiere: could not copy the example inputs to %s: %s", dest, e)


class LumiereExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODE_CLASSES


async def comfy_entrypoint() -> LumiereExtension:
    loader.register_model_folder()
    lora.register_trained_loras()
    install_example_inputs()
    return LumiereExtension()
