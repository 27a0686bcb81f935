import argparse
import json
import math

import pytest
import torch

from lumiere.data.procedural import ProceduralClips
from lumiere.eval import BASE, SSR, STYLE, TARGETS, add_eval_args, eval_command, summarize
from lumiere.metrics import analyse, flicker, frame_diffs, psnr
from lumiere.train.trainer import Trainer

TINY = {"preset": "tiny", "batch_size": 2, "lr": 1e-3, "warmup": 1, "bf16": True, "seed": 0, "threads": 1,
        "log_every": 1, "checkpoint_minutes": 1000, "export_every_checkpoint": False,
        "data": {"kind": "procedural"}}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    runs = tmp_path_factory.mktemp("runs")
    Trainer({**TINY, "stage": "t2i"}, out=runs / "t2i", max_steps=1, quiet=True).run()
    Trainer({**TINY, "stage": "conditioning", "init": str(runs / "t2i" / "model.safetensors"),
             "tasks": {"text": 1}, "export": str(d / BASE)}, out=runs / "base", max_steps=1, quiet=True).run()
    Trainer({**TINY, "stage": "ssr", "model": {"scale": 2, "resolution": 32, "num_frames": 4},
             "export": str(d / SSR)}, out=runs / "ssr", max_steps=1, quiet=True).run()
    Trainer({**TINY, "stage": "style", "init": str(d / BASE), "export": str(d / STYLE)}, out=runs / "style",
            max_steps=1, quiet=True).run()
    return d


def test_psnr_and_flicker():
    a = torch.zeros(1, 3, 4, 8, 8)
    assert psnr(a, a) == pytest.approx(100.0)
    b = a + 0.2  # 0.1 in 0..1 units -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    m = torch.zeros(1, 1, 4, 8, 8)
    m[..., :4] = 1
    c = a.clone()
    c[..., 4:] = 1
    assert psnr(a, c, m) == pytest.approx(100.0)
    assert flicker(a) == 0.0 and frame_diffs(a).shape == (3,)


def test_analyse_static_and_empty():
    v = ProceduralClips(speed=(0.0, 0.0)).clips(1, torch.Generator().manual_seed(0))[0][0]
    assert analyse(v)["direction"] == "static"
    assert analyse(torch.zeros(3, 8, 16, 16))["direction"] == "none"


def test_eval_quick_json(tiny_models, capsys):
    p = argparse.ArgumentParser()
    add_eval_args(p)
    assert eval_command(p.parse_args(["--json", "--quick", "--models", str(tiny_models), "--threads", "2",
                                      "--device", "cpu", "--photos", str(tiny_models / "no-photos")])) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("text_to_video", "conditioning", "ssr", "multidiffusion", "stylization", "camera", "init_ablation",
                "summary", "met"):
        assert key in res, key
    assert res["settings"]["device"] == "cpu"
    t2v = res["text_to_video"]
    assert t2v["ground_truth"]["direction_acc"] == 1.0 and t2v["ground_truth"]["colour_acc"] == 1.0
    assert set(t2v) == {"stunet", "framewise_t2i", "ground_truth"}
    assert math.isfinite(res["ssr"]["psnr_ssr"]) and math.isfinite(res["ssr"]["psnr_bicubic"])
    assert len(res["stylization"]["value"]) == len(res["stylization"]["alpha"])
    ia = res["init_ablation"]
    assert ia["identity"]["first_loss"] > 0 and ia["he"]["first_loss"] > 0
    # jumps for every text-to-video row; the ground truth never jumps
    assert all(0 <= t2v[k]["jump_rate"] <= 1 for k in t2v) and t2v["ground_truth"]["jump_rate"] == 0
    # every conditioning task both ways; with replacement the known pixels are exact
    for task in ("image_to_video", "inpaint", "outpaint", "cinemagraph"):
        assert set(res["conditioning"][task]) >= {"model", "replaced"}, task
        assert res["conditioning"][task]["replaced"]["known_exact"] is True, task
    i2v = res["conditioning"]["image_to_video"]
    assert i2v["replaced"]["frame0_psnr"] == 100.0 and {"direction_acc", "jump_rate"} <= set(i2v["model"])
    assert res["summary"]["i2v_frame0_psnr_replaced"] == 100.0
    fr = res["frames"]  # keyframes exact with replacement; loop, extension and long-video figures present
    assert fr["keyframes"]["replaced"]["keyframe_psnr"] == 100.0 and fr["keyframes"]["model"]["keyframe_psnr"] < 100
    assert fr["loop"]["seam_ratio_loop"] > 0 and fr["extension"]["join_ratio"] > 0
    assert {"multidiffusion", "extension"} <= set(fr["long"])
    assert all(0 <= fr["long"][m]["segment_direction_acc"] <= 1 for m in ("multidiffusion", "extension"))
    small, large = fr["memory"]["peak_mb"]
    (f_small, f_large), size = fr["memory"]["frames"], 16  # the tiny base's frames are 16 x 16
    # bounded by one window: only the clip-long buffers (latents, sums, weights: a few 3 x 16 x 16 fp32 frames each)
    # grow with the length; the whole clip through the network at once adds ~100 KB a frame (measured)
    assert large - small < 8 * (f_large - f_small) * 3 * size * size * 4 / 2 ** 20, (small, large)
    assert "loop_seam_ratio" in res["met"] and "long_md_spike" in res["summary"]
    cam = res["camera"]  # no photos folder given here: seeded textures; the reader is right on the ground truth
    assert cam["ground_truth"]["direction_acc"] == 1.0 and cam["replaced"]["frame0_psnr"] == 100.0
    assert cam["model"]["frame0_psnr"] < 100 and len(cam["model"]["reads"]) == cam["clips"] == 2
    st = res["stylization"]
    assert set(st["accuracy"]) == {"0.0", "0.5", "0.75"} and "colour_drop_max" in st
    # summary / met come from the one table: every target is there (all sections ran), but the photo and whole-clip
    # sections' where the folder holds no photo model and no issue-19 models (they say so)
    assert "missing" in res["photo"] and "missing" in res["whole_clip"]
    assert set(res["met"]) == {f.name for f in TARGETS if not f.name.startswith(("photo_", "whole_clip_"))}
    assert set(res["met"]) <= set(res["summary"])
    assert [t["name"] for t in res["targets"]] == [f.name for f in TARGETS]


def test_summary_and_met_derive_from_the_targets_table():
    res = {"text_to_video": {"stunet": {"direction_acc": 0.9, "jump_rate": 0.2}},
           "stylization": {"monotonic": True}}
    summary, met = summarize(res)
    assert summary == {"direction_acc": 0.9, "jump_rate": 0.2, "style_monotonic": True}
    assert met == {"direction_acc": True, "jump_rate": False, "style_monotonic": True}
    res["text_to_video"]["stunet"]["direction_acc"] = 0.8  # below 0.85
    assert summarize(res)[1]["direction_acc"] is False
