"""External text embeddings: the stored caption table, and training an external-text model on it (the encoder
here is a small seeded torch module; the core ComfyUI encoder's parity is tested in tests/comfy/test_nodes.py)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from lumiere.checkpoint import load_model
from lumiere.data.embeddings import (EMBEDDINGS_FILE, CaptionEmbeddings, caption_key, embed_folder, folder_captions,
                                     write_caption_embeddings)
from lumiere.pipeline import generate
from lumiere.train.stages import build_stage
from lumiere.train.trainer import Trainer
from test_data import _write_video
from test_train import TINY as TINY_BUILTIN

WIDTH = 24
TINY = {**TINY_BUILTIN, "model": {"text": {"kind": "external", "width": WIDTH, "max_tokens": 6}}}


def toy_encoder(text: str) -> torch.Tensor:
    """A deterministic stand-in for a text encoder: (6 tokens, WIDTH), different per text."""
    g = torch.Generator().manual_seed(sum(map(ord, text)) + 7 * len(text))
    return torch.randn(6, WIDTH, generator=g)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for k, cap in enumerate(["a red bar", "a red bar", "a bar moving right", ""]):
        _write_video(d / f"v{k}.mp4", frames=10, fps=8)
        if cap:
            (d / f"v{k}.txt").write_text(cap + "\n")
    embed_folder(d, toy_encoder, "toy")
    return d


def test_table_holds_each_caption_once_and_the_empty_one(videos, tmp_path):
    assert folder_captions(videos) == ["a red bar", "a red bar", "a bar moving right", ""]
    table = CaptionEmbeddings(videos / EMBEDDINGS_FILE)
    assert len(table) == 3 and table.width == WIDTH and table.encoder == "toy"
    got = table(["a red bar", "", "a bar moving right "])
    assert got.shape == (3, 6, WIDTH)
    for row, text in zip(got, ["a red bar", "", "a bar moving right"]):
        assert torch.equal(row, toy_encoder(text))
    with pytest.raises(ValueError, match="caption: expected one embedded in .*'a blue bar'"):
        table(["a blue bar"])
    with pytest.raises(ValueError, match="data.embeddings: expected the caption embeddings file"):
        CaptionEmbeddings(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="text encoder: expected one embedding width"):
        write_caption_embeddings(tmp_path / "x.safetensors", ["a", "bb"], lambda t: torch.zeros(2, 3 + len(t)), "x")
    # shorter embeddings are zero-padded to the longest
    write_caption_embeddings(tmp_path / "y.safetensors", ["a", "bb"], lambda t: torch.ones(1 + len(t), 4), "y")
    y = CaptionEmbeddings(tmp_path / "y.safetensors")
    assert y(["a"]).shape == (1, 3, 4) and y(["a"])[0, 2].abs().sum() == 0
    assert set(load_file(str(tmp_path / "y.safetensors"))) == {caption_key(t) for t in ("", "a", "bb")}


def test_external_text_model_trains_on_the_table_resumes_exactly_and_samples(videos, tmp_path):
    data = {"kind": "folder", "path": str(videos)}
    Trainer({**TINY, "stage": "t2i", "data": data}, out=tmp_path / "t2i", max_steps=2, quiet=True).run()
    base = {**TINY, "stage": "conditioning", "data": data, "init": str(tmp_path / "t2i" / "model.safetensors"),
            "tasks": {"text": 1, "image_to_video": 1}}
    Trainer(base, out=tmp_path / "a", max_steps=4, quiet=True).run()
    Trainer(base, out=tmp_path / "b", max_steps=2, quiet=True).run()
    Trainer(base, out=tmp_path / "b", max_steps=4, resume=True, quiet=True).run()
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("text_encoder.") for k in a)  # the encoder is the user's, not in the checkpoint
    bundle = load_model(tmp_path / "a" / "model.safetensors")
    assert bundle.text_encoder is None and bundle.config.text.kind == "external"
    assert bundle.config.unet.context_dim == WIDTH
    table = CaptionEmbeddings(videos / EMBEDDINGS_FILE)
    video = generate(bundle, "", context=table(["a red bar"]), uncond_context=table([""]), steps=2, num_frames=8)
    assert video.shape == (1, 3, 8, 16, 16) and torch.isfinite(video).all()
    assert json.loads((tmp_path / "a" / "latest.json").read_text())["step"] == 4


def test_embedding_width_must_match_the_model(videos):
    spec = {**TINY, "stage": "t2i", "data": {"kind": "folder", "path": str(videos)},
            "model": {"text": {"kind": "external", "width": WIDTH + 8}}}
    stage = build_stage(spec)
    with pytest.raises(ValueError, match=f"data.embeddings: expected embeddings {WIDTH + 8} wide .* got {WIDTH}"):
        stage.loss(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="data.kind: an external-text model trains on folder data"):
        build_stage({**spec, "data": {"kind": "procedural"}}).loss(torch.Generator().manual_seed(0))
