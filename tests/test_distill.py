"""The distill stage (`lumiere.train.stages.DistillStage`) on the tiny preset: a few-step, cfg-1 student of a base
and of an SSR, its recorded sampling config read back by the pipeline and the CLI, exact resume, and a
distillation that measurably moves the student toward the teacher's many-step samples."""
import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lumiere import cli
from lumiere.checkpoint import load_model
from lumiere.conditioning import inpaint
from lumiere.diffusion.samplers import get_sigmas
from lumiere.diffusion.schedule import vesigma_to_t
from lumiere.pipeline import generate, sampling_defaults, upscale
from lumiere.train import add_train_args, train_command
from lumiere.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = {"preset": "tiny", "batch_size": 2, "lr": 1e-3, "warmup": 2, "bf16": True, "seed": 0, "threads": 1,
        "log_every": 1, "checkpoint_minutes": 1000, "export_every_checkpoint": False,
        "data": {"kind": "procedural"}}
TASKS = {"text": 1, "image_to_video": 1, "inpaint": 1, "keyframes": 1}


def spec(stage, **kw):
    return {**TINY, "stage": stage, **kw}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny <J, C, M> base (t2i 2 steps, conditioning 1 step) and a tiny SSR (2 steps): the teachers."""
    d = tmp_path_factory.mktemp("teachers")
    Trainer(spec("t2i"), out=d / "t2i", max_steps=2, quiet=True).run()
    Trainer(spec("conditioning", init=str(d / "t2i" / "model.safetensors"), tasks={"text": 1, "inpaint": 1}),
            out=d / "base", max_steps=1, quiet=True).run()
    Trainer(spec("ssr", model={"scale": 2, "resolution": 32, "num_frames": 4}), out=d / "ssr", max_steps=2,
            quiet=True).run()
    return {"t2i": d / "t2i" / "model.safetensors", "base": d / "base" / "model.safetensors",
            "ssr": d / "ssr" / "model.safetensors"}


def distill_spec(init, **kw):
    return spec("distill", **{"init": str(init), "tasks": TASKS, "distill_steps": 2, "teacher_steps": 8,
                              "teacher_cfg": 3.0, **kw})


def test_trailing_grid():
    s = get_sigmas("trailing", 4, 0.002, 160.0)
    assert s.shape == (5,) and s[-1] == 0 and torch.isclose(s[0], torch.tensor(160.0))
    t = vesigma_to_t(s[:-1].double())
    gaps = t[:-1] - t[1:]
    assert torch.allclose(gaps, gaps[0].expand_as(gaps), atol=1e-5)  # even in t
    t_min = vesigma_to_t(torch.tensor(0.002, dtype=torch.float64))
    assert torch.isclose(t[-1] - gaps[0], t_min, atol=1e-5)  # the last call one spacing above t_min, not at it


def test_distill_base_records_its_sampling_and_samples_in_n_calls(tmp_path, teachers):
    cfg = tmp_path / "distill.json"
    cfg.write_text(json.dumps(distill_spec(teachers["base"], probe_minutes=1000,
                                           probe={"clips": 1, "steps": 2, "cfg": 1.0, "distill_clips": 2})))
    p = argparse.ArgumentParser()
    add_train_args(p)
    assert train_command(p.parse_args(["distill", "--config", str(cfg), "--out", str(tmp_path / "run"),
                                       "--max-steps", "2"])) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    probe = next(r for r in log if r.get("event") == "probe")
    assert probe["student_steps"] == 2 and probe["student_psnr_to_teacher"] > 0 and "direction_acc" in probe
    b = load_model(tmp_path / "run" / "model.safetensors")
    rec = b.config.sampling
    assert (rec["steps"], rec["cfg"], rec["sampler"], rec["scheduler"]) == (2, 1.0, "ddim", "trailing")
    assert rec["sigmas"] == get_sigmas("trailing", 2, b.config.sigma_min, b.config.sigma_max).tolist()
    assert rec["distilled"]["teacher_steps"] == 8 and rec["distilled"]["teacher_cfg"] == 3.0
    assert b.config.role == "base" and b.config.conditioning == "jcm" and "distill" in b.config.notes["training"]
    assert sampling_defaults(b.config) == {"steps": 2, "cfg": 1.0, "sampler": "ddim", "scheduler": "trailing"}
    # the teacher's defaults are unchanged
    assert sampling_defaults(load_model(teachers["base"]).config)["steps"] == 25

    calls = []
    net = b.model
    hook = net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    seen = []
    video = generate(b, "a red circle moving right", seed=1, callback=lambda d: seen.append(float(d["sigma"])))
    assert video.shape == (1, 3, 8, 16, 16) and torch.isfinite(video).all()
    assert calls == [1, 1]  # two network calls of one clip each: cfg 1, no unconditional batch
    assert seen == rec["sigmas"][:-1]  # on the recorded grid
    # a <C, M> task with known-pixel replacement: the known pixels come back exactly
    g = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    known = torch.ones(16, 16)
    known[4:12, 4:12] = 0
    C, M = inpaint(g, known)
    calls.clear()
    out = generate(b, "a red circle moving right", C=C, M=M, replace_known=True, seed=2)
    hook.remove()
    assert calls == [1, 1] and out.shape == (1, 3, 8, 16, 16)
    assert torch.equal(out * M, C.clamp(-1, 1) * M)


def test_cli_generate_uses_the_recorded_steps(tmp_path, teachers):
    Trainer(distill_spec(teachers["base"]), out=tmp_path / "run", max_steps=1, quiet=True).run()
    model = tmp_path / "run" / "model.safetensors"
    argv = ["generate", "--model", str(model), "--out", str(tmp_path / "frames"), "--quiet", "--threads", "1",
            "--prompt", "a red circle moving right"]
    # no flag: None, which the pipeline reads as the model's recorded steps / cfg / sampler / scheduler
    args = cli.build_parser(argv).parse_args(argv)
    assert (args.steps, args.cfg, args.sampler, args.scheduler) == (None, None, None, None)
    assert cli.main(argv) == 0
    assert len(list((tmp_path / "frames").glob("*.png"))) == load_model(model).config.num_frames


def test_distill_resume_is_exact(tmp_path, teachers):
    s = distill_spec(teachers["base"])
    Trainer(s, out=tmp_path / "a", max_steps=4, quiet=True).run()
    Trainer(s, out=tmp_path / "b", max_steps=2, quiet=True).run()
    Trainer(s, out=tmp_path / "b", max_steps=4, resume=True, quiet=True).run()
    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("a", "b"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = (json.loads((tmp_path / r / "latest.json").read_text()) for r in ("a", "b"))
    assert la["step"] == lb["step"] == 4
    sa, sb = (load_file(str(tmp_path / r / f"{lt['name']}.safetensors")) for r, lt in (("a", la), ("b", lb)))
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)  # weights, EMA, Adam, RNG
    assert not any(k.startswith("teacher") for k in sa)  # the teacher is the init file, never in the state


def test_distill_ssr(tmp_path, teachers):
    tr = Trainer(spec("distill", init=str(teachers["ssr"]), distill_steps=1, teacher_steps=4, teacher_cfg=1.0),
                 out=tmp_path, max_steps=2, quiet=True)
    tr.run()
    probe = tr.stage.distill_probe(clips=2)
    assert probe["student_steps"] == 1 and probe["bicubic_psnr_to_data"] > 10  # the SSR's baseline, in dB
    b = load_model(tmp_path / "model.safetensors")
    assert b.config.role == "ssr"
    d = sampling_defaults(b.config)
    assert (d["steps"], d["cfg"], d["denoise"], d["scheduler"]) == (1, 1.0, 1.0, "trailing")
    calls = []
    hook = b.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    lo = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    out = upscale(b, lo, "a red circle moving right")
    hook.remove()
    assert out.shape == (1, 3, 4, 32, 32) and len(calls) == 1  # one window, one call


def test_distill_errors(tmp_path, teachers):
    with pytest.raises(ValueError, match="teacher_steps: expected a multiple of distill_steps"):
        Trainer(distill_spec(teachers["base"], teacher_steps=7), out=tmp_path / "x", quiet=True)
    with pytest.raises(ValueError, match="init: expected a base or SSR checkpoint"):
        Trainer(distill_spec(teachers["t2i"]), out=tmp_path / "y", quiet=True)
    with pytest.raises(ValueError, match="tasks: the teacher"):
        Trainer(spec("distill", init=str(teachers["ssr"]), tasks={"inpaint": 1}), out=tmp_path / "z", quiet=True)


def test_distillation_moves_the_student_toward_the_teacher(tmp_path, teachers):
    """The student at 2 steps (cfg 1) against the teacher's 8-step guided DDIM from the same noise on fixed clips:
    40 steps of distillation raise the PSNR between them by more than 2 dB (measured: 18.7 -> 22.4 dB, 21 s)."""
    tr = Trainer(distill_spec(teachers["base"], batch_size=4, bf16=False, ema=0.9, warmup=5, log_every=10,
                              tasks={"text": 1, "inpaint": 1}), out=tmp_path, max_steps=40, quiet=True)
    before = tr.stage.distill_probe(clips=4)
    tr.run()
    with tr.ema_weights():
        after = tr.stage.distill_probe(clips=4)
    assert after["teacher_psnr_to_data"] == before["teacher_psnr_to_data"]  # the same reference
    assert after["student_psnr_to_teacher"] > before["student_psnr_to_teacher"] + 2.0, (before, after)


def test_student_init_continues_a_distillation(tmp_path, teachers):
    """student_init loads an earlier student's weights (not the teacher's) and refuses a student of another grid."""
    first = distill_spec(teachers["base"])
    Trainer(first, out=tmp_path / "a", max_steps=3, quiet=True).run()
    student = tmp_path / "a" / "model.safetensors"
    tr = Trainer(distill_spec(teachers["base"], student_init=str(student)), out=tmp_path / "b", quiet=True)
    want, teacher = load_model(student).model.state_dict(), load_model(teachers["base"]).model.state_dict()
    got = tr.stage.bundle.model.state_dict()
    assert all(torch.equal(got[k].float(), want[k].float()) for k in want)
    assert not all(torch.equal(got[k].float(), teacher[k].float()) for k in teacher)
    with pytest.raises(ValueError, match="student_init: expected a base distilled to 4 steps"):
        Trainer(distill_spec(teachers["base"], student_init=str(student), distill_steps=4), out=tmp_path / "c",
                quiet=True)
    with pytest.raises(ValueError, match="student_init: expected a base distilled to 2 steps"):
        Trainer(distill_spec(teachers["base"], student_init=str(teachers["base"])), out=tmp_path / "d", quiet=True)


def test_data_target_trains_the_grid_on_the_clips(tmp_path, teachers):
    """data_target 1: the loss is the v-loss against the clip itself at the grid's noise levels, so it needs no
    teacher call (a teacher that fails if called proves it), and its value differs from the teacher-target loss."""
    tr = Trainer(spec("distill", init=str(teachers["ssr"]), distill_steps=2, teacher_steps=4, teacher_cfg=1.0,
                      data_target=1.0), out=tmp_path / "data", quiet=True)

    def no_teacher(*a, **k):
        raise AssertionError("the teacher was called")
    tr.stage.teacher_target = no_teacher
    data_loss = float(tr.stage.loss(torch.Generator().manual_seed(0)).detach())
    tr2 = Trainer(spec("distill", init=str(teachers["ssr"]), distill_steps=2, teacher_steps=4, teacher_cfg=1.0),
                  out=tmp_path / "teacher", quiet=True)
    teacher_loss = float(tr2.stage.loss(torch.Generator().manual_seed(0)).detach())
    assert data_loss > 0 and teacher_loss > 0 and abs(data_loss - teacher_loss) > 1e-6
    with pytest.raises(ValueError, match="data_target: expected a fraction in 0..1, got 1.5"):
        Trainer(spec("distill", init=str(teachers["ssr"]), data_target=1.5), out=tmp_path / "x", quiet=True)
