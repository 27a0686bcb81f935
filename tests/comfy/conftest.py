"""Fixtures for tests against a real ComfyUI 0.3.75 (scripts/setup_comfy.sh): a live server with this pack, and
an in-process ComfyUI for node-level tests. Skipped (with the command to run) when ComfyUI is not set up."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from comfy_fixtures import (NEEDS_SETUP, ROOT, WORKFLOWS, model_substitutes, shared_server,  # noqa: E402
                            substitute_models)
from comfy_harness import COMFY_DIR, is_set_up, workflow_to_api  # noqa: E402
from tiny_models import make_tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def comfy_server():
    if not is_set_up():
        pytest.skip(NEEDS_SETUP)
    return shared_server()


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.object_info()


@pytest.fixture(scope="session")
def api_workflows(object_info) -> dict[str, dict]:
    """Every bundled workflow in API format, runnable here (models substituted)."""
    names = model_substitutes()
    return {p.stem: substitute_models(workflow_to_api(json.loads(p.read_text()), object_info), names)
            for p in WORKFLOWS}


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    """This pack imported inside an in-process ComfyUI (as ComfyUI imports it: a package under another name).

    Needs the ComfyUI venv: `.comfy/venv/bin/python -m pytest tests/comfy`."""
    if not is_set_up():
        pytest.skip(NEEDS_SETUP)
    if Path(sys.prefix).resolve() != (COMFY_DIR / "venv").resolve():
        pytest.skip("in-process node tests need the ComfyUI venv: .comfy/venv/bin/python -m pytest tests/comfy")
    # ComfyUI first: the repo root (on sys.path for `import lumiere`) has a `nodes/` package that would shadow
    # ComfyUI's own `nodes` module
    sys.path.insert(0, str(COMFY_DIR / "ComfyUI"))
    from comfy.cli_args import args
    args.cpu = True  # as `main.py --cpu`; must precede the first import of comfy.model_management
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_base")
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_input_directory(str(base / "input"))
    models = base / "models" / "lumiere"
    folder_paths.folder_names_and_paths["lumiere"] = ([str(models)], {".safetensors"})
    make_tiny_models(models)
    spec = importlib.util.spec_from_file_location("lumiere_pack_under_test", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    asyncio.run(module.comfy_entrypoint())
    module.models_dir = models
    return module
