"""Measured: a motion LoRA trained inside ComfyUI on a handful of clips of a motion the demo base does not make.

The demo base only ever saw objects moving along the four axes. A handful of clips (`lumiere.lora.TRAIN_LOOKS`)
of objects moving on the down-right diagonal, captioned "... moving right ...", train a LoRA with the pack's
Lumiere Train Motion LoRA node (core's LoRA adapters); it is saved with core's Save LoRA Weights and read back by
core's LoraLoaderModelOnly at several strengths; "moving right" prompts in colours, shapes and backgrounds never
trained on (`lumiere.lora.HELDOUT_LOOKS`) are sampled with the Lumiere Sampler, and the object's direction is read
from pixels (`lumiere.lora_eval.motion_figures`, the eval's object reader). Strength 0 must give the base's clips bit
for bit, 1 the diagonal.

Runs in the ComfyUI venv (scripts/setup_comfy.sh), in-process, CPU:
    .comfy/venv/bin/python scripts/motion_lora.py [--steps 150] [--clips 12] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMFY = Path(os.environ.get("COMFY_DIR", ROOT / ".comfy")) / "ComfyUI"


def boot_comfy(base: Path):
    """ComfyUI's modules in this process (CPU), its folders under `base`, and this pack loaded as ComfyUI loads
    it (a package under another name) -> the pack module."""
    sys.path.insert(0, str(COMFY))
    from comfy.cli_args import args
    args.cpu = True
    import folder_paths
    for d in ("output", "input", "temp"):
        (base / d).mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_temp_directory(str(base / "temp"))
    spec = importlib.util.spec_from_file_location("lumiere_pack_measured", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    asyncio.run(pack.comfy_entrypoint())
    return pack


def encode(clip, texts: list[str]):
    import nodes as core
    return [entry for text in texts for entry in core.CLIPTextEncode().encode(clip, text)[0]]


def measure(pack, ckpt: str = "lumiere_demo_base.safetensors", steps: int = 150, lr: float = 3e-3, rank: int = 8,
            layers: str = "temporal", batch_size: int = 2, clips: int = 12, sample_steps: int = 20,
            cfg: float = 4.0, strengths=(0.0, 0.5, 1.0), seed: int = 0, log=print) -> dict:
    """Train, save, load back at each strength, sample the held-out prompts, read their motion -> figures.
    `pack`: this pack as ComfyUI loaded it (its library is `pack.lumiere`)."""
    import folder_paths  # ComfyUI's modules: importable once boot_comfy (or the tests' ComfyUI) set them up
    import nodes as core
    from comfy_extras.nodes_train import SaveLoRA
    lora, lora_eval, procedural, evaluation = (importlib.import_module(f"{pack.__name__}.lumiere.{m}") for m in
                                               ("lora", "lora_eval", "data.procedural", "eval"))
    HELDOUT_LOOKS, TRAIN_LOOKS, diagonal_clips = lora.HELDOUT_LOOKS, lora.TRAIN_LOOKS, lora.diagonal_clips
    motion_figures, caption, analyse = lora_eval.motion_figures, procedural.caption, evaluation.analyse

    n = pack.nodes
    with torch.inference_mode():  # as ComfyUI runs every node
        model, clip, frames, width, height, *_ = n.loader.LumiereLoader.execute(ckpt, "fp32").args
        clips_video, captions = diagonal_clips(TRAIN_LOOKS, torch.Generator().manual_seed(seed), size=width,
                                         frames=frames)
        t0 = time.time()
        weights, loss_map, trained = n.lora.LumiereTrainLoRA.execute(
            model, {"samples": clips_video}, encode(clip, captions), steps, lr, rank, layers, batch_size, seed).args
        train_s = time.time() - t0
        log(f"trained {trained} steps on {len(captions)} clips in {train_s:.0f} s; loss "
            f"{sum(loss_map['loss'][:10]) / 10:.4f} (first 10) -> {sum(loss_map['loss'][-10:]) / 10:.4f} (last 10)")
        SaveLoRA.execute(weights, "loras/lumiere_motion_lora", trained)
        saved = sorted((Path(folder_paths.get_output_directory()) / "loras").glob("lumiere_motion_lora*"))[-1]
        folder_paths.add_model_folder_path("loras", str(saved.parent))
        looks = [HELDOUT_LOOKS[i % len(HELDOUT_LOOKS)] for i in range(clips)]
        prompts = [caption(c, s, "right", b) for c, s, b in looks]
        negative = encode(clip, [""])
        empty = {"samples": torch.zeros(1, 3, frames, height, width)}
        out, videos = {}, {}
        for strength in strengths:
            m = core.LoraLoaderModelOnly().load_lora_model_only(model, saved.name, strength)[0]
            t0 = time.time()
            vids = torch.cat([n.sampler.LumiereSampler.execute(
                m, encode(clip, [p]), negative, empty, seed + i, sample_steps, cfg, "ddim", "normal", 1.0
            ).args[0]["samples"] for i, p in enumerate(prompts)])
            videos[strength] = vids
            read = [analyse(v) for v in vids]  # the look: the LoRA should leave colour and shape as prompted
            out[f"strength_{strength:g}"] = {
                **motion_figures(vids, "down-right", "right"),
                "colour_acc": round(sum(r["colour"] == c for r, (c, _, _) in zip(read, looks)) / len(looks), 4),
                "shape_acc": round(sum(r["shape"] == s for r, (_, s, _) in zip(read, looks)) / len(looks), 4)}
            log(f"strength {strength:g}: {out[f'strength_{strength:g}']} ({time.time() - t0:.0f} s)")
        base = torch.cat([n.sampler.LumiereSampler.execute(
            model, encode(clip, [p]), negative, empty, seed + i, sample_steps, cfg, "ddim", "normal", 1.0
        ).args[0]["samples"] for i, p in enumerate(prompts)]) if 0.0 in strengths else None
    truth = motion_figures(clips_video, "down-right", "right")
    res = {
        "setting": {"model": ckpt, "train_clips": len(captions), "train_steps": steps, "learning_rate": lr,
                    "rank": rank, "layers": layers, "batch_size": batch_size, "heldout_clips": clips,
                    "sample_steps": sample_steps, "cfg": cfg, "seed": seed},
        "train_seconds": round(train_s, 1),
        "loss_first10": round(sum(loss_map["loss"][:10]) / 10, 5),
        "loss_last10": round(sum(loss_map["loss"][-10:]) / 10, 5),
        "lora_file": saved.name, "lora_bytes": saved.stat().st_size,
        "training_clips": truth,
        **out,
    }
    if base is not None:
        res["strength_0_equals_base_bitwise"] = bool(torch.equal(videos[0.0], base))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default="lumiere_demo_base.safetensors")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--layers", default="temporal", choices=["temporal", "all"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--clips", type=int, default=12, help="held-out prompts sampled per strength")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--strengths", default="0,0.5,1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="lumiere_motion_lora_") as tmp:
        pack = boot_comfy(Path(tmp))
        res = measure(pack, a.ckpt, a.steps, a.lr, a.rank, a.layers, a.batch_size, a.clips, a.sample_steps, a.cfg,
                      tuple(float(s) for s in a.strengths.split(",")), a.seed,
                      log=(lambda *x: print(*x, file=sys.stderr)) if a.json else print)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
