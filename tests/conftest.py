import os
import sys
from pathlib import Path

# The test models are tiny: one thread is as fast, and avoids OpenMP spin-waits stalling for seconds when the
# cores are shared (also inherited by the CLI subprocesses). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
