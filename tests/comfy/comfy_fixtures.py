"""Shared by tests/comfy and tests/browser: one ComfyUI server per test session, and the bundled workflows with
the demo model names swapped for tiny random-weight stand-ins when the shipped models are absent."""
from __future__ import annotations

import atexit
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from comfy_harness import COMFY_DIR, ComfyServer  # noqa: E402
from tiny_models import RANDOM_CLIP_L, TINY, make_tiny_models, write_random_clip_l  # noqa: E402

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
DEMO = {"lumiere_demo_base.safetensors": "base", "lumiere_demo_ssr.safetensors": "ssr",
        "lumiere_demo_style.safetensors": "style", "lumiere_demo_base_4step.safetensors": "base"}
# the external-text workflow's user files (none ship): always the tiny stand-in and a random-weight core CLIP-L
USER_FILES = {"lumiere_external_base.safetensors": TINY["external"], "clip_l.safetensors": RANDOM_CLIP_L}
NEEDS_SETUP = "ComfyUI is not set up: run scripts/setup_comfy.sh (then run these tests with .comfy/venv/bin/python)"
_server: ComfyServer | None = None


def shared_server() -> ComfyServer:
    """Started on first use, stopped when the test process exits, with core Latent2RGB previews
    (--preview-method latent2rgb; the pack follows the user's setting). Tiny models are written into
    <base>/models/lumiere."""
    global _server
    if _server is None:
        server = ComfyServer(extra_args=("--preview-method", "latent2rgb"), log_path=COMFY_DIR / "test-server.log")
        server.link_pack()
        make_tiny_models(server.base_dir / "models" / "lumiere")
        write_random_clip_l(server.base_dir / "models" / "text_encoders", COMFY_DIR / "ComfyUI")
        server.start()
        atexit.register(server.stop)
        _server = server
    return _server


def model_substitutes() -> dict[str, str]:
    """Demo model name -> the file the tests use: the shipped model if present, else its tiny stand-in. The style
    must match the base model's architecture: shipped only with the shipped base."""
    have = {name for name in DEMO if (ROOT / "models" / "lumiere" / name).exists()}
    if "lumiere_demo_base.safetensors" not in have:
        have.discard("lumiere_demo_style.safetensors")
    return {**{name: name if name in have else TINY[role] for name, role in DEMO.items()}, **USER_FILES}


def substitute_models(data, names: dict[str, str] | None = None):
    """A copy of an API prompt or UI workflow with the Lumiere model names replaced."""
    names = names or model_substitutes()
    data = json.loads(json.dumps(data))
    if "nodes" in data:  # UI format: the names are widget values
        for node in data["nodes"]:
            if node["type"].startswith("Lumiere") or node["type"] == "CLIPLoader":
                node["widgets_values"] = [names.get(v, v) if isinstance(v, str) else v
                                          for v in node.get("widgets_values") or []]
        return data
    for node in data.values():
        for key in ("ckpt_name", "style_name", "clip_name"):
            if node["inputs"].get(key) in names:
                node["inputs"][key] = names[node["inputs"][key]]
    return data
