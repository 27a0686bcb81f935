"""ComfyUI-Lumiere: Lumiere space-time U-Net video diffusion as native ComfyUI nodes.

ComfyUI imports this file as a package named after its path (the folder name may differ after a Manager
install), so every import is relative. Outside ComfyUI (pytest, plain Python) there is nothing to register.
"""
try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI >= 0.3.75-ish with the V3 API)
except ImportError:
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401
