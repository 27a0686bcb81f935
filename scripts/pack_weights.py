"""Pack fp16/bf16 safetensors files smaller for a size-limited transfer, and unpack them, bit for bit.

    python scripts/pack_weights.py pack OUT.xzw FILE...      # one archive of the files (paths kept)
    python scripts/pack_weights.py unpack ARCHIVE [--to DIR]

Half-precision weights barely compress as they are; split into their high bytes (sign, exponent: few distinct
values) and low bytes first, LZMA takes about a quarter off. The archive is a small JSON index then the streams.
"""
from __future__ import annotations

import argparse
import json
import lzma
import struct
import sys
from pathlib import Path

import numpy as np

PRESET = 6


def pack(out: Path, files: list[Path]) -> None:
    index, streams = [], []
    for f in files:
        raw = np.frombuffer(f.read_bytes(), dtype=np.uint8)
        even = len(raw) - len(raw) % 2
        hi, lo = raw[1:even:2].tobytes(), raw[0:even:2].tobytes() + raw[even:].tobytes()
        for part in (hi, lo):
            streams.append(lzma.compress(part, preset=PRESET))
        index.append({"path": str(f), "size": len(raw), "streams": [len(streams[-2]), len(streams[-1])]})
    head = json.dumps(index).encode()
    with open(out, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head)
        for s in streams:
            fh.write(s)


def unpack(archive: Path, to: Path) -> list[Path]:
    data = archive.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    index, pos, written = json.loads(data[8:8 + n]), 8 + n, []
    for item in index:
        a, b = item["streams"]
        hi = np.frombuffer(lzma.decompress(data[pos:pos + a]), dtype=np.uint8)
        lo = np.frombuffer(lzma.decompress(data[pos + a:pos + a + b]), dtype=np.uint8)
        pos += a + b
        raw = np.empty(item["size"], dtype=np.uint8)
        even = item["size"] - item["size"] % 2
        raw[1:even:2], raw[0:even:2] = hi, lo[:even // 2]
        raw[even:] = lo[even // 2:]
        dst = to / item["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(raw.tobytes())
        written.append(dst)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out")
    p.add_argument("files", nargs="+")
    u = sub.add_parser("unpack")
    u.add_argument("archive")
    u.add_argument("--to", default=".")
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        files = [Path(f) for f in a.files]
        pack(Path(a.out), files)
        total = sum(f.stat().st_size for f in files)
        print(f"{len(files)} files {total / 2 ** 20:.1f} MiB -> {a.out} {Path(a.out).stat().st_size / 2 ** 20:.1f} MiB")
    else:
        for f in unpack(Path(a.archive), Path(a.to)):
            print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
