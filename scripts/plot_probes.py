"""Plot the held-out motion probes that training logs (`probe_minutes`) as one PNG, for docs/training.md.

    python scripts/plot_probes.py OUT.png RUN_DIR[:LABEL] [RUN_DIR[:LABEL] ...]

Runs are drawn one after the other on a common step axis (a continuation starts where its parent ended), each
figure a line: direction accuracy, jump rate, colour and shape accuracy (0..1), with chance (0.25) dashed, and
where a run has the camera probe, its direction accuracy over held-out photos (6 motions: chance 0.17).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SERIES = {"direction_acc": (220, 40, 40), "jump_rate": (40, 40, 220), "colour_acc": (40, 160, 40),
          "shape_acc": (200, 140, 0), "camera_direction_acc": (160, 40, 190)}  # camera: runs with its probe


def read_probes(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == "probe"]


def plot(out: Path, runs: list[tuple[Path, str]], width: int = 900, height: int = 420) -> None:
    points, bounds, offset = [], [], 0
    for run, label in runs:
        probes = read_probes(run)
        if not probes:
            continue
        for r in probes:
            points.append((offset + r["step"], r))
        bounds.append((offset, label))
        offset += probes[-1]["step"]
    if not points:
        raise SystemExit("no probe records in the given runs")
    left, right, top, bottom = 60, 170, 20, 40
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    max_step = max(s for s, _ in points) or 1
    px = lambda s: left + (width - left - right) * s / max_step  # noqa: E731
    py = lambda v: top + (height - top - bottom) * (1 - v)  # noqa: E731
    d.rectangle([left, top, width - right, height - bottom], outline="black")
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        d.line([left - 4, py(v), left, py(v)], fill="black")
        d.text((left - 40, py(v) - 6), f"{v:.2f}", fill="black")
    tick = 500 if max_step <= 4000 else 1000
    for x in range(0, max_step + 1, tick):
        d.line([px(x), height - bottom, px(x), height - bottom + 4], fill="black")
        d.text((px(x) - 12, height - bottom + 8), str(x), fill="black")
    d.text((width // 2 - 60, height - 16), "training steps", fill="black")
    for x in range(left, width - right, 8):  # chance level of the direction accuracy
        d.line([x, py(0.25), x + 3, py(0.25)], fill=(150, 150, 150))
    for start, label in bounds:
        d.line([px(start), top, px(start), height - bottom], fill=(180, 180, 180))
        d.text((px(start) + 3, top + 3), label, fill=(100, 100, 100))
    for i, (key, colour) in enumerate(SERIES.items()):
        xy = [(px(s), py(r[key])) for s, r in points if key in r]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=2)
        for x, y in xy:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        d.line([width - right + 10, top + 10 + 18 * i, width - right + 30, top + 10 + 18 * i], fill=colour, width=2)
        d.text((width - right + 35, top + 4 + 18 * i), key, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    runs = []
    for arg in sys.argv[2:]:
        path, _, label = arg.partition(":")
        runs.append((Path(path), label or Path(path).name))
    plot(Path(sys.argv[1]), runs)
    print(sys.argv[1])
