"""scripts/gpu_check.py on CPU with the tiny preset: every stage trains, sampling runs, one table comes out."""
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_variant(tmp_path):
    out = tmp_path / "table.md"
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--preset", "tiny", "--steps", "2",
                        "--batch", "1", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| train") or line.startswith("| sample")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "train t2i", "train temporal", "train conditioning", "train ssr", "train style",
        "sample 1 clip (25 DDIM steps, CFG)"]
    for row in rows[:5]:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert float(cells[2]) > 0 and float(cells[3]) > 0 and 0 < float(cells[4]) < 100  # steps/s, GFLOP, MFU
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cuda"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    if not torch.cuda.is_available():
        assert r.returncode == 2 and "no CUDA device" in r.stderr
