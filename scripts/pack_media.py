"""A compact copy of `data/real` (what `make media` writes) for a machine without PyAV or room for the lossless
set: clips as lossy animated WebP, stills as JPEG, both smaller, same names and splits.

    python scripts/pack_media.py [--src data/real] [--out data/real_compact] [--split train]
                                 [--short-side 96] [--fps 8] [--quality 90]

`lumiere.data.real.RealClips` reads the result like the original (`data.path`); clips are stored at `--fps`, so
a model trained at that frame rate sees the same frames. Sizes are printed; nothing is written outside `--out`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lumiere.data.folder import decode_video  # noqa: E402
from lumiere.data.real import media_files, to_uint8  # noqa: E402


def shrink(im: Image.Image, short_side: int) -> Image.Image:
    w, h = im.size
    k = short_side / min(w, h)
    return im if k >= 1 else im.resize((max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default="data/real")
    ap.add_argument("--out", default="data/real_compact")
    ap.add_argument("--split", default="train", choices=("train", "heldout"))
    ap.add_argument("--short-side", type=int, default=96)
    ap.add_argument("--still-short-side", type=int, default=128)
    ap.add_argument("--fps", type=float, default=8)
    ap.add_argument("--quality", type=int, default=90)
    a = ap.parse_args(argv)
    if a.short_side < 8 or a.still_short_side < 8 or a.fps <= 0 or not 1 <= a.quality <= 100:
        raise SystemExit("--short-side/--still-short-side: expected >= 8, --fps > 0, --quality 1..100")
    src, out = Path(a.src), Path(a.out)
    total = {"clips": 0, "stills": 0}
    clips = media_files(src, "clips", a.split)
    stills = media_files(src, "stills", a.split)
    if not clips and not stills:
        raise SystemExit(f"--src: expected clips/{a.split}/ or stills/{a.split}/ in {src} (`make media`), found none")
    (out / "clips" / a.split).mkdir(parents=True, exist_ok=True)
    (out / "stills" / a.split).mkdir(parents=True, exist_ok=True)
    for p in clips:
        video = to_uint8(decode_video(p, a.fps))  # (3, t, h, w)
        frames = [shrink(Image.fromarray(f.numpy()), a.short_side) for f in video.permute(1, 2, 3, 0)]
        dst = out / "clips" / a.split / (p.stem + ".webp")
        frames[0].save(dst, save_all=True, append_images=frames[1:], duration=round(1000 / a.fps), loop=0,
                       quality=a.quality, method=4)
        total["clips"] += dst.stat().st_size
    for p in stills:
        dst = out / "stills" / a.split / (p.stem + ".jpg")
        shrink(Image.open(p).convert("RGB"), a.still_short_side).save(dst, quality=a.quality)
        total["stills"] += dst.stat().st_size
    print(f"{len(clips)} clips {total['clips'] / 2 ** 20:.1f} MiB, {len(stills)} stills "
          f"{total['stills'] / 2 ** 20:.1f} MiB -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
