"""Headless Chromium with the real ComfyUI front-end: every bundled workflow loads with no missing nodes, the
front-end would send exactly what our UI->API converter produces, and one workflow queued from the page runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "comfy"))

from comfy_fixtures import NEEDS_SETUP, ROOT, WORKFLOWS, shared_server, substitute_models  # noqa: E402
from make_workflows import EXTERNAL, NEEDS_USER_MODELS, TEXT_ENCODER  # noqa: E402
from comfy_harness import is_set_up, workflow_to_api  # noqa: E402

PAGE = Path(__file__).with_name("comfy_page.mjs")


@pytest.fixture(scope="module")
def server():
    if not is_set_up():
        pytest.skip(NEEDS_SETUP)
    if not (shutil.which("node") and shutil.which("chromium") and (ROOT / "node_modules" / "playwright-core").is_dir()):
        pytest.skip("browser tests need node, chromium and playwright-core: scripts/setup_comfy.sh --browser")
    return shared_server()


def page(server, command: str, files: list[Path], *extra: str, timeout: float = 600) -> list[dict]:
    out = subprocess.run(["node", str(PAGE), command, "--url", server.url, *extra, *map(str, files)],
                         capture_output=True, text=True, timeout=timeout)
    results = [json.loads(line[len("RESULT "):]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == len(files), f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return results


def test_every_workflow_loads_without_missing_nodes(server):
    """...and graphToPrompt gives what tests/comfy run (the converter is checked against the real front-end)."""
    info = server.object_info()
    for r in page(server, "check", WORKFLOWS):
        name = Path(r["file"]).stem
        assert r.get("error") is None, r
        assert r["missingByRegistry"] == [] and r["missingReported"] == [], r
        assert r["pageErrors"] == [], r
        # opens clean: every combo value is one the node offers (example inputs, shipped models); only the
        # workflow that needs the user's own models may name files that are not there
        allowed = {f"{t}={v}" for t in ("LumiereLoader.ckpt_name", "CLIPLoader.clip_name")
                   for v in (EXTERNAL, TEXT_ENCODER)} if name in NEEDS_USER_MODELS else set()
        assert set(r["badCombos"]) <= allowed, (name, r["badCombos"])
        ours = workflow_to_api(json.loads(Path(r["file"]).read_text()), info)
        assert {k: strip(v, info) for k, v in ours.items()} == {k: strip(v, info) for k, v in r["prompt"].items()}, name


def strip(node: dict, info: dict) -> dict:
    """class_type + the inputs the node declares (the front-end also sends its own preview widgets, e.g. LoadVideo's
    'video-preview', which the server ignores)."""
    declared = {**info[node["class_type"]]["input"].get("required", {}), **info[node["class_type"]]["input"].get(
        "optional", {})}
    return {"class_type": node["class_type"], "inputs": {k: v for k, v in node["inputs"].items() if k in declared}}


def test_queue_from_the_page(server, tmp_path):
    """Text-to-video + SSR, queued by the front-end's own Queue: completes and saves a video."""
    wf = tmp_path / "text_to_video_ssr.json"
    wf.write_text(json.dumps(substitute_models(json.loads((ROOT / "workflows" / wf.name).read_text()))))
    shot = tmp_path / "queued.png"
    (r,) = page(server, "queue", [wf], "--shot", str(shot))
    assert r["ok"], r
    assert r["httpStatus"] == 200 and any(o.endswith(".mp4") for o in r["outputs"]), r
    assert shot.stat().st_size > 0
