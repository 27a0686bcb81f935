"""Lumiere (Bar-Tal et al., SIGGRAPH Asia 2024): a space-time U-Net video diffusion model, in pure PyTorch.

No ComfyUI import anywhere in this package: the node pack (`nodes/`) is a thin layer over it.
"""
try:
    import torch  # noqa: F401  (every module of the library needs it)
except ModuleNotFoundError as e:
    if e.name != "torch":
        raise
    import sys

    _MESSAGE = ("lumiere needs PyTorch, which is not installed in this Python: pip install torch "
                "(the build for your machine: https://pytorch.org/get-started/locally/)")
    if sys.argv[:1] == ["-m"]:  # `python -m lumiere ...`: one line, no traceback
        print(f"lumiere: error: {_MESSAGE}", file=sys.stderr)
        raise SystemExit(2) from None
    raise ModuleNotFoundError(_MESSAGE, name="torch") from None

from .checkpoint import LumiereBundle, build_bundle, load_model, save_model
from .configs import ModelConfig, get_preset
from .models.stunet import STUNet, freeze_t2i, inflate
from .models.text import TextEncoder
from .models.unet2d import UNet2D, widen_input

__all__ = ["LumiereBundle", "ModelConfig", "STUNet", "TextEncoder", "UNet2D", "build_bundle", "freeze_t2i",
           "get_preset", "inflate", "load_model", "save_model", "widen_input"]
__version__ = "0.1.0"
