"""Run every bundled workflow on a headless ComfyUI and write an animated GIF of each output to docs/images/
(the pictures in the README) and a thumbnail beside the workflow (workflows/<name>.jpg: four frames, which
ComfyUI's template browser shows). Needs the shipped demo models in models/lumiere.

    scripts/setup_comfy.sh && .comfy/venv/bin/python scripts/render_workflow_previews.py [NAME ...]

NAME: only these workflows (file stems); default all.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageSequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from comfy_harness import ComfyServer, workflow_to_api  # noqa: E402
from make_workflows import NEEDS_USER_MODELS  # noqa: E402

OUT = ROOT / "docs" / "images"
HEIGHT = 128  # the demo clips are 32-64 px: scale up (nearest) so they are visible on a page


def thumbnail(frames: list[Image.Image], size: int = 256) -> Image.Image:
    """Frames 0, 1/3, 2/3 and the last in a 2 x 2 grid (reading order), `size` px square."""
    picks = [frames[round(i * (len(frames) - 1) / 3)] for i in range(4)]
    half = size // 2
    grid = Image.new("RGB", (size, size))
    for i, f in enumerate(picks):
        grid.paste(f.resize((half, half), Image.NEAREST), ((i % 2) * half, (i // 2) * half))
    return grid


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with ComfyServer() as server:
        info = server.object_info()
        names = set(sys.argv[1:])
        for path in sorted((ROOT / "workflows").glob("*.json")):
            if (names and path.stem not in names) or path.stem in NEEDS_USER_MODELS:  # those have a card
                continue
            prompt = workflow_to_api(json.loads(path.read_text()), info)
            create = next(n for n in prompt.values() if n["class_type"] == "CreateVideo")
            fps = 8.0
            prompt["preview"] = {"class_type": "SaveAnimatedWEBP", "inputs": {
                "images": create["inputs"]["images"], "filename_prefix": f"previews/{path.stem}", "fps": fps,
                "lossless": True, "quality": 100, "method": "default"}}
            entry = server.run(prompt, timeout=1800)
            webp = next(p for p in server.output_files(entry) if p.suffix == ".webp")
            with Image.open(webp) as im:
                frames = [f.convert("RGB") for f in ImageSequence.Iterator(im)]
            scale = max(1, HEIGHT // frames[0].height)
            frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in frames]
            gif = OUT / f"{path.stem}.gif"
            frames[0].save(gif, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
            thumbnail(frames).save(path.with_suffix(".jpg"), quality=90)
            print(f"{path.stem}: {len(frames)} frames -> {gif.relative_to(ROOT)}, {path.with_suffix('.jpg').name}")


if __name__ == "__main__":
    main()
