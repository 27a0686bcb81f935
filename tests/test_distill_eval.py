"""The eval's distill section (`lumiere.distill_eval`) on tiny models: teacher and student side by side, network
evaluations counted at the network (a guided step is two), the targets relative to the teacher; a distilled base
run through the whole eval is sampled at its recorded steps and cfg."""
import pytest

from lumiere.checkpoint import load_model, save_model
from lumiere.diffusion.samplers import trailing_sigmas
from lumiere.eval import BASE, SSR, evaluate
from lumiere.train.trainer import Trainer

TINY = {"preset": "tiny", "batch_size": 2, "lr": 1e-3, "warmup": 1, "bf16": True, "seed": 0, "threads": 1,
        "log_every": 1000, "checkpoint_minutes": 1000, "data": {"kind": "procedural"}}


def distilled_copy(src, dst, steps: int, **extra):
    """`src` with a distilled model's sampling record (the weights do not matter for the plumbing)."""
    b = load_model(src)
    c = b.config
    c.sampling = {"steps": steps, "cfg": 1.0, "sampler": "ddim", "scheduler": "trailing",
                  "sigmas": trailing_sigmas(steps, c.sigma_min, c.sigma_max).tolist(),
                  "distilled": {"teacher_steps": 8, "teacher_cfg": 4.0}, **extra}
    save_model(dst, b)
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d, runs = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("runs")
    Trainer({**TINY, "stage": "t2i"}, out=runs / "t2i", max_steps=1, quiet=True).run()
    Trainer({**TINY, "stage": "conditioning", "init": str(runs / "t2i" / "model.safetensors"),
             "tasks": {"text": 1}, "export": str(d / BASE)}, out=runs / "base", max_steps=1, quiet=True).run()
    Trainer({**TINY, "stage": "ssr", "model": {"scale": 2, "resolution": 32, "num_frames": 4},
             "export": str(d / SSR)}, out=runs / "ssr", max_steps=1, quiet=True).run()
    distilled_copy(d / BASE, d / "lumiere_demo_base_4step.safetensors", 4)
    distilled_copy(d / SSR, d / "lumiere_demo_ssr_2step.safetensors", 2, denoise=1.0)
    return d


def test_distill_section_side_by_side(models):
    res = evaluate(models, quick=True, threads=1, sections=["distill"], log=lambda m: None)["distill"]
    t2v = res["text_to_video"]
    assert t2v["teacher"]["network_evals_per_clip"] == 50  # 25 guided steps
    assert t2v["student"]["network_evals_per_clip"] == 4 and t2v["student_8step"]["network_evals_per_clip"] == 8
    assert t2v["teacher_at_student_steps"]["network_evals_per_clip"] == 4  # the teacher at 4 steps, cfg 1
    assert res["settings"]["student"] == {"steps": 4, "cfg": 1.0, "sampler": "ddim", "scheduler": "trailing"}
    assert res["image_to_video"]["student"]["frame0_psnr"] == 100.0  # replaced: the given frame exact
    ssr = res["ssr"]
    assert ssr["student"]["calls_per_clip"] == 2 and ssr["student_1call"]["calls_per_clip"] == 1
    assert ssr["teacher"]["calls_per_clip"] == 6  # 20 steps from denoise 0.3
    targets = res["targets"]
    assert set(targets) == {"student", "student_8step", "ssr_student", "ssr_student_1call"}
    assert targets["student"]["network_evals_per_clip"]["met"]
    for rows in targets.values():
        assert all(set(r) == {"value", "op", "bound", "met"} for r in rows.values())


def test_a_distilled_base_is_evaluated_at_its_recorded_sampling(models, tmp_path):
    (tmp_path / BASE).write_bytes((models / "lumiere_demo_base_4step.safetensors").read_bytes())
    res = evaluate(tmp_path, quick=True, threads=1, sections=["text_to_video"], log=lambda m: None)
    assert (res["settings"]["steps"], res["settings"]["cfg"]) == (4, 1.0)
