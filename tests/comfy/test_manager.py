"""Installed as a user installs it: ComfyUI-Manager's CLI (`python -m cm_cli install URL`) clones this repo from a
git server on 127.0.0.1 (`git daemon`) into a fresh ComfyUI base folder; that ComfyUI starts with the pack loaded and
runs a bundled workflow on the shipped models.

The clone is of the repo's committed HEAD (what a user gets), not of the working tree. Runs where the Manager is
installed in the ComfyUI venv (scripts/setup_comfy.sh installs it for cores that name it: 0.33.0)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from comfy_fixtures import NEEDS_SETUP, ROOT
from comfy_harness import COMFY_DIR, ComfyServer, free_port, is_set_up, workflow_to_api

REPO_NAME = "ComfyUI-Lumiere"


def manager_installed() -> bool:
    return subprocess.run([str(COMFY_DIR / "venv" / "bin" / "python"), "-c", "import importlib.util as u; "
                           "assert u.find_spec('cm_cli') and u.find_spec('comfyui_manager')"],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def git_url(tmp_path_factory):
    """git://127.0.0.1:PORT/ComfyUI-Lumiere.git served by `git daemon` from this repo."""
    if not is_set_up():
        pytest.skip(NEEDS_SETUP)
    if not manager_installed():
        pytest.skip(f"ComfyUI-Manager is not in {COMFY_DIR / 'venv'} (scripts/setup_comfy.sh --core 0.33.0)")
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    served = tmp_path_factory.mktemp("git_served")
    (served / f"{REPO_NAME}.git").symlink_to(Path(subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--absolute-git-dir"], capture_output=True, text=True,
        check=True).stdout.strip()), target_is_directory=True)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                               f"--port={port}", f"--base-path={served}", str(served)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"git://127.0.0.1:{port}/{REPO_NAME}.git"
    try:
        for _ in range(100):  # until it answers
            if subprocess.run(["git", "ls-remote", url, "HEAD"], capture_output=True).returncode == 0:
                break
            assert daemon.poll() is None, daemon.stderr.read().decode()
            time.sleep(0.1)
        else:
            pytest.fail(f"git daemon did not answer at {url}")
        yield url
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_manager_installs_the_pack_and_a_workflow_runs(git_url, tmp_path):
    base = tmp_path / "base"
    for d in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / d).mkdir(parents=True)
    env = {**os.environ, "COMFYUI_PATH": str(COMFY_DIR / "ComfyUI"), "COMFYUI_FOLDERS_BASE_PATH": str(base),
           "OMP_NUM_THREADS": "1"}
    # cm_cli installs into the core's own custom_nodes/; the test's server reads its --base-directory, so the
    # installed folder is moved there afterwards (and the core's folder left as it was)
    core_copy = COMFY_DIR / "ComfyUI" / "custom_nodes" / REPO_NAME
    shutil.rmtree(core_copy, ignore_errors=True)
    try:
        out = subprocess.run([str(COMFY_DIR / "venv" / "bin" / "python"), "-m", "cm_cli", "install", git_url,
                              "--mode", "local", "--user-directory", str(base / "user"), "--exit-on-fail"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert out.returncode == 0 and (core_copy / "__init__.py").is_file(), \
            f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        installed = base / "custom_nodes" / REPO_NAME
        shutil.move(core_copy, installed)
    finally:
        shutil.rmtree(core_copy, ignore_errors=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert subprocess.run(["git", "-C", str(installed), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout == head

    with ComfyServer(base_dir=base, link=False, log_path=tmp_path / "server.log") as server:
        log = server.log()
        assert "Traceback" not in log and "IMPORT FAILED" not in log, log[-4000:]
        info = server.object_info()
        ours = sorted(k for k, v in info.items() if v.get("python_module", "").endswith(REPO_NAME))
        assert len(ours) >= 10 and "LumiereLongSampler" in ours, ours
        # a bundled workflow from the installed copy, on the shipped models, its example input in place
        wf = json.loads((installed / "workflows" / "image_to_video.json").read_text())
        entry = server.run(workflow_to_api(wf, info))
        videos = [p for p in server.output_files(entry) if p.suffix == ".mp4"]
        assert videos and videos[0].stat().st_size > 0, entry["outputs"]
        assert (base / "input" / "lumiere_example_still.png").is_file()
