import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumiere.checkpoint import load_model
from lumiere.conditioning import TRAINING_TASKS
from lumiere.stylize import interpolate, t2i_state_dict
from lumiere.train import add_train_args, train_command
from lumiere.train.spec import load_spec, markdown_table
from lumiere.train.stages import STAGES
from lumiere.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = {"preset": "tiny", "batch_size": 2, "lr": 1e-3, "warmup": 2, "bf16": True, "seed": 0, "threads": 1,
        "log_every": 1, "checkpoint_minutes": 1000, "export_every_checkpoint": False,
        "data": {"kind": "procedural"}}


def spec(stage, **kw):
    return {**TINY, "stage": stage, **kw}


@pytest.fixture(scope="module")
def t2i_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("t2i")
    Trainer(spec("t2i"), out=d, max_steps=2, quiet=True).run()
    return d / "model.safetensors"


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, t2i_ckpt):
    d = tmp_path_factory.mktemp("base")
    Trainer(spec("conditioning", init=str(t2i_ckpt), tasks={"text": 1, "inpaint": 1}), out=d, max_steps=1,
            quiet=True).run()
    return d / "model.safetensors"


def test_t2i_stage(t2i_ckpt):
    b = load_model(t2i_ckpt)
    assert b.config.role == "t2i" and b.config.temporal is None and b.text_encoder is not None
    assert b.config.notes["training"]["t2i"]["steps"] == 2
    log = [json.loads(x) for x in (t2i_ckpt.parent / "train.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and any("loss" in r for r in log)


def test_temporal_stage_freezes_t2i(tmp_path, t2i_ckpt):
    tr = Trainer(spec("temporal", init=str(t2i_ckpt), t_power=0.5), out=tmp_path, max_steps=2, quiet=True)
    before = {k: v.clone() for k, v in tr.stage.bundle.model.unet.state_dict().items()}
    tr.run()
    after = tr.stage.bundle.model.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # T2I frozen
    start = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert start["trainable"] > 0 and start["frozen"] > 0
    b = load_model(tmp_path / "model.safetensors")
    assert b.config.role == "base" and b.config.temporal is not None


def test_conditioning_stage_all_tasks(tmp_path, t2i_ckpt):
    tasks = {k: 1 for k in TRAINING_TASKS}
    tr = Trainer(spec("conditioning", init=str(t2i_ckpt), tasks=tasks, batch_size=7), out=tmp_path,
                 max_steps=2, quiet=True)
    x0 = torch.rand(40, 3, 8, 16, 16) * 2 - 1
    cond = tr.stage.make_cond(x0, torch.Generator().manual_seed(0))
    assert cond.shape == (40, 4, 8, 16, 16)
    C, M = cond[:, :3], cond[:, 3:]
    assert torch.equal(C, x0 * M)  # every task's known pixels are the clip's own
    known = M.mean(dim=(1, 3, 4))  # (b, t): the fraction of each frame that is known
    whole_frames = ((known == 0) | (known == 1)).all(dim=1) & (known.sum(1) > 0)
    assert whole_frames.sum() >= 10  # image_to_video / keyframes / extend clips: whole known frames
    tr.run()
    b = load_model(tmp_path / "model.safetensors")
    assert b.config.unet.in_channels == 7 and b.config.conditioning == "jcm"


def test_ssr_stage(tmp_path):
    Trainer(spec("ssr", model={"scale": 2, "resolution": 32, "num_frames": 4}), out=tmp_path, max_steps=2,
            quiet=True).run()
    b = load_model(tmp_path / "model.safetensors")
    assert b.config.role == "ssr" and b.config.conditioning == "lowres" and b.config.unet.in_channels == 6
    assert b.config.scale == 2
    # continued from its own export: the weights start where that run ended, the history records both runs
    tr = Trainer(spec("ssr", init=str(tmp_path / "model.safetensors")), out=tmp_path / "more", quiet=True)
    torch.testing.assert_close(tr.stage.bundle.model.state_dict(), b.model.state_dict(), rtol=0, atol=0)
    tr.max_steps = 1
    tr.run()
    c = load_model(tmp_path / "more" / "model.safetensors")
    assert {"ssr", "ssr_run2"} <= set(c.config.notes["training"])
    with pytest.raises(ValueError, match="init: expected an SSR checkpoint"):
        Trainer(spec("ssr", init=str(ROOT / "models" / "lumiere" / "lumiere_demo_base.safetensors")),
                out=tmp_path / "y", quiet=True)


def test_style_stage_matches_base_t2i_keys(tmp_path, base_ckpt):
    Trainer(spec("style", init=str(base_ckpt)), out=tmp_path, max_steps=2, quiet=True).run()
    style, base = load_model(tmp_path / "model.safetensors"), load_model(base_ckpt)
    assert style.config.role == "style"
    orig, trained = t2i_state_dict(base.model), style.model.state_dict()
    mixed = interpolate(orig, trained, 0.5)
    assert set(trained) == set(orig)  # the style checkpoint holds the T2I weights, key for key
    moved = [k for k in orig if orig[k].is_floating_point() and not torch.equal(orig[k], trained[k])]
    assert moved  # two steps of style training changed T2I weights, and alpha 0.5 lands halfway for each
    for k in moved:
        torch.testing.assert_close(mixed[k], (orig[k] + trained[k].to(orig[k])) / 2)


@pytest.mark.parametrize("stage", ["t2i", "conditioning"])
def test_exact_resume(tmp_path, t2i_ckpt, stage):
    kw = {"init": str(t2i_ckpt), "tasks": {"text": 1, "image_to_video": 1, "cinemagraph": 1}} if stage != "t2i" else {}
    Trainer(spec(stage, **kw), out=tmp_path / "a", max_steps=4, quiet=True).run()
    Trainer(spec(stage, **kw), out=tmp_path / "b", max_steps=2, quiet=True).run()
    Trainer(spec(stage, **kw), out=tmp_path / "b", max_steps=4, resume=True, quiet=True).run()
    for name in ("model.safetensors",):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    la = json.loads((tmp_path / "a" / "latest.json").read_text())
    lb = json.loads((tmp_path / "b" / "latest.json").read_text())
    sa = load_file(str(tmp_path / "a" / f"{la['name']}.safetensors"))
    sb = load_file(str(tmp_path / "b" / f"{lb['name']}.safetensors"))
    assert la["step"] == lb["step"] == 4
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # weights, EMA, Adam moments, RNG


def test_checkpoint_files_are_tensors_and_json(tmp_path):
    Trainer(spec("t2i"), out=tmp_path, max_steps=1, quiet=True).run()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "latest.json" in files and not any(f.endswith((".pt", ".pth", ".pkl", ".tmp")) for f in files)
    name = json.loads((tmp_path / "latest.json").read_text())["name"]
    t = load_file(str(tmp_path / f"{name}.safetensors"))
    assert any(k.startswith("opt.") for k in t) and any(k.startswith("ema.") for k in t) and "rng.0" in t


def test_cli_entry(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(spec("t2i")))
    p = argparse.ArgumentParser()
    add_train_args(p)
    args = p.parse_args(["t2i", "--config", str(cfg), "--out", str(tmp_path / "run"), "--max-steps", "1"])
    assert train_command(args) == 0
    assert (tmp_path / "run" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="--config.*stage 't2i', not 'ssr'"):
        train_command(p.parse_args(["ssr", "--config", str(cfg), "--out", str(tmp_path / "x")]))
    cfg.write_text(json.dumps({**spec("t2i"), "batchsize": 4}))  # a typo is an error naming the key
    with pytest.raises(ValueError, match="unknown key 'batchsize'"):
        train_command(p.parse_args(["t2i", "--config", str(cfg), "--out", str(tmp_path / "y")]))
    cfg.write_text(json.dumps({**spec("t2i"), "data": {"kind": "procedural", "speeds": [1, 2]}}))
    with pytest.raises(ValueError, match="unknown key 'data.speeds'"):
        train_command(p.parse_args(["t2i", "--config", str(cfg), "--out", str(tmp_path / "y")]))
    cfg.write_text(json.dumps({**spec("t2i"), "lr": "fast"}))
    with pytest.raises(ValueError, match="lr: expected a number, got 'fast'"):
        train_command(p.parse_args(["t2i", "--config", str(cfg), "--out", str(tmp_path / "y")]))


def test_repo_configs_are_valid():
    """Every shipped config and test fixture reads into a TrainSpec (unknown keys would be errors)."""
    files = sorted((ROOT / "configs").glob("*.json")) + sorted((ROOT / "tests" / "configs").glob("*.json"))
    assert len(files) >= 10
    for f in files:
        assert load_spec(f).stage in STAGES, f.name


def test_docs_config_table_is_generated_from_the_spec():
    doc = (ROOT / "docs" / "training.md").read_text()
    start, end = "<!-- config-keys: generated by `python -m lumiere.train.spec` -->", "<!-- /config-keys -->"
    assert start in doc and end in doc
    assert doc.split(start)[1].split(end)[0].strip() == markdown_table()


def test_ddp_two_processes_keep_identical_weights(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(spec("t2i", dump_rank_weights=True, threads=1)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "lumiere.train", "t2i", "--config", str(cfg), "--out", str(tmp_path / "run"),
                        "--max-steps", "3"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    w0 = load_file(str(tmp_path / "run" / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "run" / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    log = [json.loads(x) for x in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2


def test_tiny_configs_chain(tmp_path):
    """configs/*_tiny.json, in the order of the paper's stages, through the CLI entry point."""
    p = argparse.ArgumentParser()
    add_train_args(p)
    prev = {"temporal": "t2i", "conditioning": "temporal", "style": "conditioning"}
    for stage in ("t2i", "temporal", "conditioning", "ssr", "style"):
        argv = [stage, "--config", str(ROOT / "tests" / "configs" / f"{stage}_tiny.json"), "--out", str(tmp_path / stage),
                "--max-steps", "2"]
        if stage in prev:
            argv += ["--init", str(tmp_path / prev[stage] / "model.safetensors")]
        assert train_command(p.parse_args(argv)) == 0
        b = load_model(tmp_path / stage / "model.safetensors")
        assert b.config.role == {"t2i": "t2i", "ssr": "ssr", "style": "style"}.get(stage, "base")


def test_unfreeze_fallback_trains_chosen_t2i_weights_at_scaled_lr(tmp_path, t2i_ckpt):
    s = spec("conditioning", init=str(t2i_ckpt), tasks={"text": 1, "image_to_video": 1},
             unfreeze=["unet.up.1", "unet.conv_out"], lr_t2i_scale=0.5)
    tr = Trainer(s, out=tmp_path / "a", max_steps=2, quiet=True)
    unet = tr.stage.bundle.model.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    assert sorted(g["lr_scale"] for g in tr.opt.param_groups) == [0.5, 1.0]
    tr.run()
    after = unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("up.1.") for k in changed) and any(k.startswith("conv_out.") for k in changed)
    assert not any(k.startswith(("down.", "mid_", "up.0.")) for k in changed)
    Trainer(s, out=tmp_path / "b", max_steps=1, quiet=True).run()
    Trainer(s, out=tmp_path / "b", max_steps=2, resume=True, quiet=True).run()
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_conditioning_targets_agree_with_known_pixels(tmp_path, t2i_ckpt):
    """For every task, C equals the training clip wherever M = 1 (a cinemagraph's static area is truly static)."""
    for task in ("image_to_video", "inpaint", "outpaint", "cinemagraph"):
        tr = Trainer(spec("conditioning", init=str(t2i_ckpt), tasks={task: 1}), out=tmp_path / task, quiet=True)
        g = torch.Generator().manual_seed(0)
        x0, _, _ = tr.stage.data.clips(6, g)
        cond = tr.stage.make_cond(x0, g)
        C, M = cond[:, :3], cond[:, 3:]
        assert M.sum() > 0 and torch.equal(C * M, x0 * M), task


def test_folder_data_with_decoding_threads_logs_the_wait(tmp_path):
    """A t2i run on a folder of captioned videos with data.workers: every log record says how long training
    waited for decoded videos."""
    from test_data import _write_video
    videos = tmp_path / "videos"
    videos.mkdir()
    for k in range(3):
        _write_video(videos / f"v{k}.mp4", frames=10, fps=8)
        (videos / f"v{k}.txt").write_text("a red bar")
    out = tmp_path / "run"
    Trainer(spec("t2i", data={"kind": "folder", "path": str(videos), "workers": 2}), out=out, max_steps=3,
            quiet=True).run()
    logs = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "loss" in r]
    assert len(steps) == 3 and all(r["data_wait_s"] >= 0 for r in steps)
