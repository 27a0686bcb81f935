"""The external-text-encoder route end to end, inside a real in-process ComfyUI: a random-weight core CLIP-L text
encoder saved to a file here (no downloads), captions embedded by scripts/embed_captions.py's code, a tiny external-text
model trained on them, and core Load CLIP + CLIP Text Encode conditioning sampled by the Lumiere nodes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the library tests' video writer

CAPTIONS = ["a red bar", "a bar moving right", "a red bar"]


@pytest.fixture(scope="module")
def route(pack, tmp_path_factory):
    """(core CLIP from Load CLIP, the caption table, the trained tiny external model's file name)."""
    import folder_paths
    import nodes as comfy_nodes  # ComfyUI's nodes.py (first on sys.path in the pack fixture)
    from test_data import _write_video
    lib = sys.modules["lumiere_pack_under_test.lumiere"]
    from lumiere_pack_under_test.lumiere.data.embeddings import EMBEDDINGS_FILE, CaptionEmbeddings
    from lumiere_pack_under_test.lumiere.train.trainer import Trainer

    from comfy_harness import COMFY_DIR
    from tiny_models import RANDOM_CLIP_L, write_random_clip_l
    base = tmp_path_factory.mktemp("external")
    path = write_random_clip_l(base / "text_encoders", COMFY_DIR / "ComfyUI")
    folder_paths.add_model_folder_path("text_encoders", str(base / "text_encoders"))
    clip = comfy_nodes.CLIPLoader().load_clip(RANDOM_CLIP_L, "stable_diffusion")[0]
    videos = base / "videos"
    videos.mkdir()
    for k, cap in enumerate(CAPTIONS):
        _write_video(videos / f"v{k}.mp4", frames=10, fps=8)
        (videos / f"v{k}.txt").write_text(cap)
    # the embedding step as docs/training.md gives it, in its own process
    subprocess.run([sys.executable, str(ROOT / "scripts" / "embed_captions.py"), str(videos), "--text-encoder",
                    str(path), "--type", "stable_diffusion", "--comfy", str(COMFY_DIR / "ComfyUI"), "--cpu"],
                   check=True, capture_output=True)
    table = CaptionEmbeddings(videos / EMBEDDINGS_FILE)
    spec = {"preset": "tiny", "batch_size": 2, "lr": 1e-3, "warmup": 1, "bf16": False, "seed": 0, "threads": 1,
            "log_every": 1, "checkpoint_minutes": 1000, "export_every_checkpoint": False,
            "model": {"text": {"kind": "external", "width": table.width, "max_tokens": table.tokens}},
            "data": {"kind": "folder", "path": str(videos)}}
    Trainer({**spec, "stage": "t2i"}, out=base / "t2i", max_steps=1, quiet=True).run()
    export = pack.models_dir / "trained_external.safetensors"
    Trainer({**spec, "stage": "conditioning", "init": str(base / "t2i" / "model.safetensors"),
             "tasks": {"text": 1, "image_to_video": 1}, "export": str(export)}, out=base / "base", max_steps=1,
            quiet=True).run()
    assert lib.load_model(export).text_encoder is None
    return clip, table, export.name


def text_encode(clip, text):
    import nodes as comfy_nodes
    return comfy_nodes.CLIPTextEncode().encode(clip, text)[0]


def test_training_embeddings_equal_clip_text_encode(route):
    """Train / run parity: each caption's stored embedding is exactly what core CLIP Text Encode gives, for the
    same text, from the same weights loaded by core Load CLIP (tokenizer, 77 tokens, padding); "" included."""
    clip, table, _ = route
    assert table.width == 768 and table.tokens == 77
    for text in ("a red bar", "a bar moving right", ""):
        cond = text_encode(clip, text)
        torch.testing.assert_close(cond[0][0].float(), table([text]), rtol=0, atol=0)
    assert not torch.equal(table(["a red bar"]), table([""]))


def test_external_model_samples_core_conditioning_as_the_library(pack, route):
    """Load CLIP -> CLIP Text Encode (prompt, and "" as the negative: the encoder's empty prompt, the
    unconditional context the model was trained with) -> Lumiere Sampler equals library `generate` on the stored
    embeddings; the Loader gives no CLIP and says to use a core text-encoder loader."""
    from lumiere_pack_under_test.lumiere.pipeline import generate
    clip, table, name = route
    n = pack.nodes
    model, own_clip, frames, width, height, fps, info = n.loader.LumiereLoader.execute(name).args
    assert own_clip is None and "external text embeddings of width 768" in info
    latent = {"samples": torch.zeros(1, 3, frames, height, width)}
    out = n.sampler.LumiereSampler.execute(model, text_encode(clip, "a red bar"), text_encode(clip, ""), latent,
                                           seed=3, steps=4, cfg=2.0, sampler_name="ddim", scheduler="normal",
                                           denoise=1.0).args[0]["samples"].clamp(-1, 1)
    bundle = pack.lumiere.load_model(pack.models_dir / name)
    lib = generate(bundle, "", context=table(["a red bar"]), uncond_context=table([""]), num_frames=frames,
                   steps=4, cfg=2.0, seed=3, sampler="ddim", scheduler="uniform")
    torch.testing.assert_close(out, lib, rtol=0, atol=2e-3)
