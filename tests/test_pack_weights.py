"""scripts/pack_weights.py: half-precision checkpoints packed smaller and unpacked bit for bit."""
import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pack_weights", ROOT / "scripts" / "pack_weights.py")
pack_weights = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pack_weights)


def test_pack_unpack_is_exact_and_smaller(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    a = {"w": (torch.randn(256, 256, generator=g) * 0.05).half(), "b": torch.randn(7, generator=g).half()}
    b = {"v": torch.randn(3, 33, generator=g).bfloat16(), "i": torch.arange(5)}
    monkeypatch.chdir(tmp_path)
    Path("runs/x").mkdir(parents=True)
    save_file(a, "runs/x/a.safetensors")
    save_file(b, "b.safetensors")
    files = [Path("runs/x/a.safetensors"), Path("b.safetensors")]
    pack_weights.pack(Path("w.xzw"), files)
    assert Path("w.xzw").stat().st_size < 0.95 * sum(f.stat().st_size for f in files)
    out = pack_weights.unpack(Path("w.xzw"), tmp_path / "to")
    assert [p.relative_to(tmp_path / "to") for p in out] == files
    for f in files:
        assert (tmp_path / "to" / f).read_bytes() == f.read_bytes()
    assert torch.equal(load_file(tmp_path / "to" / "b.safetensors")["v"], b["v"])
