"""ComfyUI-Lumiere: Lumiere space-time U-Net video diffusion as native ComfyUI nodes.

ComfyUI imports this file as a package named after its path (the folder name may differ after a Manager
install), so every import is relative. Outside ComfyUI (pytest, plain Python) there is nothing to register.

The ComfyUI versions the pack is tested on are TESTED (pyproject.toml's `requires-comfyui` states the same range).
On a core outside it the pack logs one line saying so; if it cannot load there, that line says why (no traceback).
"""
import logging

TESTED = ("0.3.75", "0.33.0")  # oldest and newest ComfyUI the tests run on
REQUIRES = ">=0.3.75,<0.34"  # = pyproject.toml [tool.comfy] requires-comfyui


def version_tuple(text: str) -> tuple[int, ...]:
    """'0.33.0' -> (0, 33, 0); anything after the numbers ('0.3.75rc1', '+local') is ignored."""
    parts = []
    for p in str(text).split("+")[0].split("."):
        digits = p[:len(p) - len(p.lstrip("0123456789"))]  # the leading digits
        if not digits:
            break
        parts.append(int(digits))
        if digits != p:
            break
    return tuple(parts)


def in_tested_range(version: str) -> bool:
    v = version_tuple(version)
    return bool(v) and version_tuple(TESTED[0]) <= v < version_tuple(TESTED[1])[:2] + (10**9,)


def core_version() -> str | None:
    try:
        from comfyui_version import __version__  # ComfyUI's root module (ComfyUI's folder is on sys.path)
    except ImportError:
        return None
    return str(__version__)


try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI with the V3 API)
except ImportError:
    _version = core_version()
    if _version is not None:  # inside a ComfyUI too old for the V3 node API
        logging.warning("ComfyUI-Lumiere: not loaded: ComfyUI %s has no V3 node API (comfy_api.latest); "
                        "tested on ComfyUI %s to %s (requires-comfyui %s)", _version, *TESTED, REQUIRES)
else:
    _version = core_version()
    _untested = _version is not None and not in_tested_range(_version)
    try:
        from .nodes import comfy_entrypoint  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- one line, not a traceback storm, on a core the pack does not fit
        if not _untested:
            raise
        logging.warning("ComfyUI-Lumiere: not loaded: ComfyUI %s is outside the tested %s to %s "
                        "(requires-comfyui %s): %s: %s", _version, *TESTED, REQUIRES, type(e).__name__, e)
    else:
        if _untested:
            logging.warning("ComfyUI-Lumiere: ComfyUI %s is outside the tested %s to %s (requires-comfyui %s); "
                            "loading anyway", _version, *TESTED, REQUIRES)
