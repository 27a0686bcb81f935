"""`make demo`: run the bundled text-to-video + SSR workflow on a real headless ComfyUI through its HTTP API and
print the path of the video it saved.

    scripts/setup_comfy.sh && .comfy/venv/bin/python scripts/demo.py [--prompt TEXT] [--seed N] [--tiny]

--tiny runs on random-weight `tiny` models instead of the shipped demo models (a plumbing check only).
Uses only the standard library and this repo (the ComfyUI venv is not required to run it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from comfy_harness import COMFY_DIR, ComfyServer, PromptError, is_set_up, workflow_to_api  # noqa: E402

WORKFLOW = ROOT / "workflows" / "text_to_video_ssr.json"
MODELS = {"lumiere_demo_base.safetensors": "base", "lumiere_demo_ssr.safetensors": "ssr"}


def tiny_models(server: ComfyServer) -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests" / "comfy"))
    from tiny_models import TINY, make_tiny_models  # needs torch: run with .comfy/venv/bin/python
    make_tiny_models(server.base_dir / "models" / "lumiere")
    return {name: TINY[role] for name, role in MODELS.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", help="replaces the workflow's prompt (both the base and the SSR prompt)")
    ap.add_argument("--seed", type=int, help="sampling seed (default: the workflow's)")
    ap.add_argument("--tiny", action="store_true", help="random-weight tiny models (plumbing check only)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "demo.mp4", help="copy the video here too")
    args = ap.parse_args()
    if not is_set_up():
        sys.exit("ComfyUI is not set up: run scripts/setup_comfy.sh first")
    missing = [m for m in MODELS if not (ROOT / "models" / "lumiere" / m).exists()]
    if missing and not args.tiny:
        sys.exit(f"missing demo models in models/lumiere: {missing} (train them, or pass --tiny for a plumbing run)")

    t0 = time.time()
    with ComfyServer(log_path=COMFY_DIR / "demo-server.log") as server:
        print(f"ComfyUI up at {server.url} in {time.time() - t0:.1f}s (log: {server.log_path})")
        prompt = workflow_to_api(json.loads(WORKFLOW.read_text()), server.object_info())
        names = tiny_models(server) if args.tiny else {}
        for node in prompt.values():
            inputs = node["inputs"]
            if node["class_type"] == "LumiereLoader":
                inputs["ckpt_name"] = names.get(inputs["ckpt_name"], inputs["ckpt_name"])
            if args.prompt and node["class_type"] == "CLIPTextEncode" and inputs["text"]:
                inputs["text"] = args.prompt
            if args.seed is not None and "seed" in inputs:
                inputs["seed"] = args.seed
            if node["class_type"] == "SaveVideo":
                inputs["filename_prefix"] = "lumiere/demo"
        t1 = time.time()
        try:
            entry = server.run(prompt, timeout=1800)
        except PromptError as e:
            sys.exit(f"the workflow failed: {e}\n(server log: {server.log_path})")
        videos = [p for p in server.output_files(entry) if p.suffix == ".mp4"]
        if not videos:
            sys.exit(f"no video in the outputs: {entry['outputs']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(videos[0], args.out)
    print(f"text-to-video + SSR done in {time.time() - t1:.1f}s")
    print(f"video: {videos[0]}")
    print(f"copy:  {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
