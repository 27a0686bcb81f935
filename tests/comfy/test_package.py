"""The pack as ComfyUI and the Manager see it: importable without ComfyUI, relative imports only, registry
metadata present. Runs in any venv, without a server."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from comfy_fixtures import ROOT


def test_import_without_comfyui_registers_nothing():
    code = ("import importlib.util, sys; "
            f"s = importlib.util.spec_from_file_location('renamed_pack', {str(ROOT / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(ROOT)!r}]); m = importlib.util.module_from_spec(s); "
            "sys.modules[s.name] = m; s.loader.exec_module(m); print(hasattr(m, 'comfy_entrypoint'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_relative_imports_only():
    """The folder may be renamed by a Manager install: the pack never imports itself by name."""
    for path in [ROOT / "__init__.py", *(ROOT / "nodes").glob("*.py")]:
        for line in path.read_text().splitlines():
            assert not re.match(r"\s*(from|import)\s+(lumiere|nodes)\b", line), f"{path.name}: {line}"


def test_registry_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    for key in ("name", "version", "description", "license", "dependencies"):
        assert project.get(key), key
    assert project["urls"].get("Repository")
    for key in ("PublisherId", "DisplayName", "requires-comfyui"):
        assert comfy.get(key), key
    assert not (ROOT / "install.py").exists()
    assert (ROOT / "LICENSE").exists() and (ROOT / "requirements.txt").exists()
    requirements = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert not any(r.startswith("torch") for r in requirements)  # ComfyUI owns torch: never reinstall it


def test_comfyignore_leaves_development_files_out():
    ignored = {line.strip() for line in (ROOT / ".comfyignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"tests/", ".ci/", "scripts/", "docs/images/"} <= ignored
    for needed in ("nodes", "lumiere", "workflows", "models", "__init__.py"):
        assert not any(needed == i.rstrip("/") for i in ignored), needed
