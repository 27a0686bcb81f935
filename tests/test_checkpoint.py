"""Self-describing safetensors checkpoints: bitwise round trip, every error path, atomic writes, no pickle."""
import ast
import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lumiere.checkpoint import (CONFIG_KEY, CheckpointError, build_bundle, load_model, read_config, save_model)
from lumiere.configs import get_preset

LIBRARY = Path(__file__).resolve().parents[1] / "lumiere"


def bundle():
    cfg = get_preset("tiny")
    cfg.text.vocab = ("a", "red", "cat")
    cfg.role, cfg.fps = "base", 12
    cfg.notes = {"trained_steps": 3, "data": "unit test"}
    torch.manual_seed(0)
    b = build_bundle(cfg)
    with torch.no_grad():
        for p in b.model.temporal_parameters():
            p.normal_(0, 0.1)
    return b


def bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t


@pytest.fixture
def saved(tmp_path):
    b = bundle()
    path = save_model(tmp_path / "model.safetensors", b)
    return path, b


def rewrite(path, src, change):
    """Write `src`'s tensors, edited by `change(state)`, with its metadata, to `path`."""
    state = load_file(str(src))
    with open(src, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    change(state)
    save_file(state, str(path), metadata=meta)
    return path


def test_round_trip_is_bitwise(saved):
    path, b = saved
    loaded = load_model(path)
    assert loaded.config == b.config
    assert loaded.config.to_dict() == b.config.to_dict()
    assert read_config(path) == b.config
    for name in ("model", "text_encoder"):
        want, got = getattr(b, name).state_dict(), getattr(loaded, name).state_dict()
        assert want.keys() == got.keys()
        for k in want:
            assert torch.equal(bits(got[k]), bits(want[k])), k
    assert loaded.text_encoder.tokenizer.vocab == b.text_encoder.tokenizer.vocab
    assert not any(p.requires_grad for p in loaded.model.parameters()) and not loaded.model.training
    x = torch.randn(1, 7, 4, 16, 16)
    b.model.eval().requires_grad_(False)  # as loaded (grad-requiring weights may take other CPU kernels)
    with torch.no_grad():
        ctx = b.text_encoder.encode("a red cat")
        assert torch.equal(loaded.model(x, torch.tensor([0.3]), ctx), b.model(x, torch.tensor([0.3]), ctx))


def test_half_precision_save(tmp_path):
    b = bundle()
    path = save_model(tmp_path / "half.safetensors", b, dtype=torch.float16)
    loaded = load_model(path)
    w = "unet.conv_in.weight"
    assert torch.equal(loaded.model.state_dict()[w], b.model.state_dict()[w].half().float())


def test_not_safetensors(tmp_path, saved):
    path, b = saved
    for name, data in (("text.safetensors", b"hello, this is not a checkpoint at all"), ("short.safetensors", b"abc")):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: not a safetensors file"):
            load_model(p)
    pickled = tmp_path / "pickled.ckpt"
    torch.save(b.model.state_dict(), pickled)  # a pickle/zip checkpoint is refused, never unpickled
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(pickled)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "absent.safetensors")


def test_truncated(tmp_path, saved):
    path, _ = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(cut))}: truncated"):
        load_model(cut)
    head = tmp_path / "head.safetensors"
    head.write_bytes(data[:100])  # the header itself is cut
    with pytest.raises(CheckpointError, match=re.escape(str(head))):
        load_model(head)


def test_missing_key(tmp_path, saved):
    path, _ = saved
    p = rewrite(tmp_path / "missing.safetensors", path, lambda s: s.pop("net.unet.mid_res1.conv1.weight"))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: missing key 'net.unet.mid_res1.conv1.weight'"):
        load_model(p)
    p = rewrite(tmp_path / "no_text.safetensors", path, lambda s: s.pop("text_encoder.norm.bias"))
    with pytest.raises(CheckpointError, match="missing key 'text_encoder.norm.bias'"):
        load_model(p)


def test_unexpected_key(tmp_path, saved):
    path, _ = saved
    p = rewrite(tmp_path / "extra.safetensors", path, lambda s: s.update({"net.ghost.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: unexpected key 'net.ghost.weight'"):
        load_model(p)
    p = rewrite(tmp_path / "other.safetensors", path, lambda s: s.update({"optimizer.step": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="unexpected key 'optimizer.step'"):
        load_model(p)


def test_shape_mismatch(tmp_path, saved):
    path, _ = saved
    p = rewrite(tmp_path / "shape.safetensors", path,
                lambda s: s.update({"net.unet.conv_in.weight": torch.zeros(16, 3, 3, 3)}))
    with pytest.raises(CheckpointError,
                       match=rf"{re.escape(str(p))}: key 'net.unet.conv_in.weight' has shape \(16, 3, 3, 3\)"):
        load_model(p)


def test_metadata_errors(tmp_path, saved):
    path, _ = saved
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(path)), str(bare))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(bare))}: not a Lumiere checkpoint"):
        load_model(bare)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={CONFIG_KEY: json.dumps({"unet": {"depth": 3}})})
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(bad))}: unreadable '{CONFIG_KEY}'"):
        load_model(bad)


def test_atomic_write_leaves_only_the_target(tmp_path):
    b = bundle()
    save_model(tmp_path / "m.safetensors", b)
    save_model(tmp_path / "m.safetensors", b)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    b = bundle()
    path = save_model(tmp_path / "m.safetensors", b)
    good = path.read_bytes()
    u = b.model.unet
    u.mid_res2.conv1.weight = u.mid_res1.conv1.weight  # tied tensors: safetensors refuses to write them
    with pytest.raises(RuntimeError):
        save_model(path, b)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    blocked = tmp_path / "dir.safetensors"
    blocked.mkdir()  # the rename itself fails
    with pytest.raises(OSError):
        save_model(blocked, bundle())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.safetensors", "m.safetensors"]


def test_library_never_unpickles():
    """No pickle-based loader anywhere in the package (imports and calls, not comments)."""
    banned_modules = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
    hits = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute) and node.attr in ("load", "jit") and \
                    isinstance(node.value, ast.Name) and node.value.id == "torch":
                hits.append(f"{path}:{node.lineno}: torch.{node.attr}")
            elif isinstance(node, ast.keyword) and node.arg == "weights_only":
                hits.append(f"{path}:{node.lineno}: weights_only")
            hits += [f"{path}:{node.lineno}: import {n}" for n in names if n.split(".")[0] in banned_modules]
    assert not hits, hits


def test_format_version_is_written_and_newer_files_are_refused(tmp_path, saved):
    from lumiere.checkpoint import FORMAT_VERSION, VERSION_KEY
    from safetensors import safe_open
    path, _ = saved
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta[VERSION_KEY] == str(FORMAT_VERSION)
    old = tmp_path / "old.safetensors"  # the files shipped before the key existed read as version 1
    save_file(load_file(str(path)), str(old), metadata={k: v for k, v in meta.items() if k != VERSION_KEY})
    load_model(old)
    newer = tmp_path / "newer.safetensors"
    save_file(load_file(str(path)), str(newer), metadata={**meta, VERSION_KEY: str(FORMAT_VERSION + 1)})
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*update the pack"):
        load_model(newer)


def test_training_state_files_are_written_atomically_and_readable(tmp_path):
    """The trainer's JSON state goes through the same atomic writer as the checkpoints: no temp file remains and
    the file gets the user's usual permissions."""
    import os
    from lumiere.checkpoint import atomic_write_bytes
    target = tmp_path / "latest.json"
    atomic_write_bytes(target, b'{"step": 1}')
    assert target.read_bytes() == b'{"step": 1}' and [p.name for p in tmp_path.iterdir()] == ["latest.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
