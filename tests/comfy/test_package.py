"""The pack as ComfyUI and the Manager see it: importable without ComfyUI, relative imports only, registry
metadata present. Runs in any venv, without a server."""
from __future__ import annotations

import json
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
    # the Registry's icon: a URL into this repository (its main branch) of a square image of at most 400 px
    repo_raw = project["urls"]["Repository"].replace("https://github.com/", "https://raw.githubusercontent.com/")
    assert comfy.get("Icon", "").startswith(repo_raw + "/main/"), comfy.get("Icon")
    icon = ROOT / comfy["Icon"][len(repo_raw + "/main/"):]
    with open(icon, "rb") as f:  # JPEG: the size is in the first SOF0 segment
        data = f.read()
    sof = data.index(b"\xff\xc0")
    height, width = int.from_bytes(data[sof + 5:sof + 7], "big"), int.from_bytes(data[sof + 7:sof + 9], "big")
    assert width == height <= 400, (icon, width, height)
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


def run_pack_import(tmp_path, version: str, with_api: bool) -> subprocess.CompletedProcess:
    """Import the pack as ComfyUI does, beside a `comfyui_version` module naming `version` (ComfyUI's root
    module); with_api=False: a core without comfy_api (older than the V3 node API)."""
    (tmp_path / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    if not with_api:  # hide any comfy_api on the path
        (tmp_path / "comfy_api").mkdir(exist_ok=True)
        (tmp_path / "comfy_api" / "__init__.py").write_text("raise ImportError('no V3 API in this core')\n")
    code = ("import importlib.util, logging, sys; logging.basicConfig(format='%(levelname)s %(message)s'); "
            f"sys.path.insert(0, {str(tmp_path)!r}); "
            f"s = importlib.util.spec_from_file_location('renamed_pack', {str(ROOT / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(ROOT)!r}]); m = importlib.util.module_from_spec(s); "
            "sys.modules[s.name] = m; s.loader.exec_module(m); print('entrypoint', hasattr(m, 'comfy_entrypoint'))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


def test_a_core_too_old_gets_one_line(tmp_path):
    out = run_pack_import(tmp_path, "0.3.40", with_api=False)
    assert out.returncode == 0 and out.stdout.strip() == "entrypoint False", out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "ComfyUI 0.3.40" in lines[0] and "0.3.75" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_tested_range_matches_pyproject():
    """In a fresh process (this one may hold an in-process ComfyUI, where the pack would register)."""
    code = ("import importlib.util, json, sys; "
            f"s = importlib.util.spec_from_file_location('renamed_pack', {str(ROOT / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(ROOT)!r}]); m = importlib.util.module_from_spec(s); "
            "sys.modules[s.name] = m; s.loader.exec_module(m); "
            "print(json.dumps([m.REQUIRES, [m.in_tested_range(v) for v in ('0.3.74', '0.3.75', '0.8.0', '0.33.0', "
            "'0.33.2', '0.34.0', '0.47.1', '1.0.0', '')], m.version_tuple('0.3.75rc1+local')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    requires, in_range, parsed = json.loads(out.stdout)
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"] == requires
    assert in_range == [False, True, True, True, True, False, False, False, False]
    assert parsed == [0, 3, 75]
