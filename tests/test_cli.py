"""`python -m lumiere`: end to end on tiny checkpoints made in tmp_path.

Output formats, inspect, bench and a few bad inputs run in a real subprocess; the conditioning modes and the
other error paths call `cli.main` in-process (the same code after argument parsing, without paying for a
Python start-up each).
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lumiere import cli
from lumiere.checkpoint import build_bundle, save_model
from lumiere.configs import get_preset
from lumiere.media import load_video, save_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    base = get_preset("tiny")
    base.text.vocab = ("a", "red", "cat")
    save_model(d / "base.safetensors", build_bundle(base))
    ssr = dataclasses.replace(get_preset("tiny"), role="ssr", conditioning="lowres", scale=2, num_frames=4)
    ssr.unet.in_channels = 6
    save_model(d / "ssr.safetensors", build_bundle(ssr))
    style = dataclasses.replace(get_preset("tiny"), role="style", temporal=None)
    save_model(d / "style.safetensors", build_bundle(style))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / "image.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255
    Image.fromarray(mask).save(d / "mask.png")
    save_video(torch.rand(3, 8, 16, 16) * 2 - 1, d / "input.gif", fps=8)
    (d / "notes.txt").write_text("not a model")
    return d


def run(*args, check_rc=0):
    proc = subprocess.run([sys.executable, "-m", "lumiere", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == check_rc, proc.stderr
    return proc


def main(*args):
    return cli.main([str(a) for a in args])


def gen(files, *extra):
    return ("generate", "--model", files / "base.safetensors", "--prompt", "a red cat", "--steps", 2, "--quiet",
            *extra)


# ---------------------------------------------------------------- subprocess


@pytest.mark.parametrize("name", ["clip.webp", "clip.gif", "clip.mp4", "frames"])
def test_generate_writes_each_format(files, tmp_path, name):
    out = tmp_path / name
    proc = run(*gen(files, "--out", out, "--frames", 4))
    assert proc.stdout.strip() == str(out)
    video = load_video(out, 4, 16, 16)
    assert video.shape == (1, 3, 4, 16, 16)
    assert len(load_video(out, 1, 16, 16)[0, 0]) == 1
    with pytest.raises(ValueError, match="has 4 frames, 5 are needed"):
        load_video(out, 5, 16, 16)
    if name == "frames":
        assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:04d}.png" for i in range(4)]


def test_inspect(files):
    proc = run("inspect", files / "base.safetensors")
    info = json.loads(proc.stdout)
    assert info["config"]["preset"] == "tiny" and info["config"]["text"]["vocab"] == ["a", "red", "cat"]
    n = info["parameters"]
    bundle = build_bundle(get_preset("tiny"))
    assert n["temporal"] == sum(p.numel() for p in bundle.model.temporal_parameters())
    assert n["t2i"] == sum(p.numel() for p in bundle.model.unet.parameters())
    assert n["total"] == n["t2i"] + n["temporal"] + n["text_encoder"]
    style = json.loads(run("inspect", files / "style.safetensors").stdout)
    assert style["parameters"]["temporal"] == 0 and style["config"]["temporal"] is None


@pytest.mark.parametrize("args,message", [
    (("generate", "--model", "{d}/absent.safetensors", "--steps", 1), "--model: {d}/absent.safetensors: no such"),
    (("generate", "--model", "{d}/base.safetensors", "--frames", 5, "--steps", 1), "--frames: expected a "
                                                                                   "positive multiple of 2"),
    (("inspect", "{d}/notes.txt"), "{d}/notes.txt: not a safetensors file"),
])
def test_bad_inputs_exit_nonzero_naming_the_input(files, args, message):
    proc = run(*[str(a).format(d=files) for a in args], check_rc=2)
    assert message.format(d=files) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_measures_every_section():
    proc = run("bench", "--json", "--preset", "tiny", "--frames", 2, 4, "--repeats", 1, "--train-batch", 1,
               "--workers", 0, 2)
    report = json.loads(proc.stdout)
    assert {"preset", "resolution", "stunet", "baseline", "results", "ratio_definition", "peak", "forward",
            "train_step", "sampling", "data"} <= report.keys()
    # every video decoded with each thread count, against the measured step's consumption
    assert [r["workers"] for r in report["data"]["rows"]] == [0, 2]
    assert all(r["videos"] == 16 and r["videos_per_s"] > 0 and r["fed_ratio"] > 0 for r in report["data"]["rows"])
    assert [r["frames"] for r in report["results"]] == [2, 4]
    for r in report["results"]:
        for side in ("stunet", "baseline"):
            assert r[side]["time_s"] > 0 and r[side]["peak_mib"] > 0 and r[side]["train_peak_mib"] > 0
        # with gradients, the full-frame-rate baseline holds more activations than STUNet (a property of the
        # designs, not of the machine)
        assert r["ratio"]["train_memory"] > 1.0
    for row in report["forward"]:
        # FLOPs are counted, not timed: temporal down-sampling makes STUNet cheaper than the AnimateDiff-style
        # inflation, and the per-frame T2I's FLOPs grow linearly with the frame count
        assert row["vs_animatediff"]["flop_ratio"] > 1.0
    f2, f4 = (row["per_frame_t2i"]["gflop"] for row in report["forward"])
    assert f4 == pytest.approx(2 * f2, rel=0.02)
    for dtype in ("fp32", "bf16"):
        assert report["peak"][dtype]["peak_gflops"] >= report["peak"][dtype]["conv_gflops"] > 0
    step = report["train_step"]
    assert step["batch"] == 1 and step["gflop_per_step"] > 0 and 0 < step["percent_of_bf16_peak"]
    assert report["sampling"]["fp32_seconds_per_clip"] > 0 and report["sampling"]["bf16_seconds_per_clip"] > 0


# ---------------------------------------------------------------- in-process


def test_seeded_generation_is_reproducible(files, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert main(*gen(files, "--out", tmp_path / name, "--frames", 4, "--seed", seed, "--sampler", "dpmpp_2m",
                         "--scheduler", "karras", "--negative", "blurry")) == 0
    a, b, c = (load_video(tmp_path / n, 4, 16, 16) for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("extra", [
    ("--image", "{d}/image.png"),  # image_to_video is the default with --image
    ("--mode", "inpaint", "--video", "{d}/input.gif", "--mask", "{d}/mask.png"),
    ("--mode", "inpaint", "--image", "{d}/image.png", "--mask", "{d}/mask.png"),
    ("--mode", "outpaint", "--image", "{d}/image.png", "--pad", 2, 2, 4, 0),
    ("--mode", "cinemagraph", "--image", "{d}/image.png", "--mask", "{d}/mask.png"),
])
def test_conditioning_modes(files, tmp_path, extra):
    plain, out = tmp_path / "plain", tmp_path / "cond"
    assert main(*gen(files, "--out", plain, "--frames", 4)) == 0
    assert main(*gen(files, "--out", out, "--frames", 4, *[str(a).format(d=files) for a in extra])) == 0
    video = load_video(out, 4, 16, 16)
    assert not torch.equal(video, load_video(plain, 4, 16, 16))  # C and M reached the model


def test_device_choice_runs_the_model_there(files, tmp_path):
    """--device cpu (and auto) run; the library follows the model's device (the same clip as the default)."""
    assert main(*gen(files, "--frames", 4, "--device", "cpu", "--out", tmp_path / "cpu")) == 0
    assert main(*gen(files, "--frames", 4, "--out", tmp_path / "auto")) == 0
    if not torch.cuda.is_available():
        assert torch.equal(load_video(tmp_path / "cpu", 4, 16, 16), load_video(tmp_path / "auto", 4, 16, 16))


def test_keyframes_extend_loop_and_prompt_travel(files, tmp_path):
    """Keyframes land on their frames exactly (known-pixel replacement); extend keeps the input clip and reaches
    --frames; a loop and a schedule longer than the model's window run through MultiDiffusion windows."""
    from lumiere.media import load_image
    assert main(*gen(files, "--mode", "keyframes", "--keyframe", f"0={files / 'image.png'}",
                     f"--keyframe=-1={files / 'image.png'}", "--frames", 8, "--out", tmp_path / "kf")) == 0
    kf, image = load_video(tmp_path / "kf", 8, 16, 16), load_image(files / "image.png", 16, 16)
    for f in (0, 7):
        assert (kf[:, :, f] - image).abs().max() <= 2 / 255 + 1e-6
    assert (kf[:, :, 3] - image).abs().mean() > 0.05
    assert main(*gen(files, "--mode", "extend", "--video", files / "input.gif", "--frames", 14,
                     "--out", tmp_path / "ext")) == 0
    ext, source = load_video(tmp_path / "ext", 14, 16, 16), load_video(files / "input.gif", 8, 16, 16)
    assert (ext[:, :, :8] - source).abs().max() <= 2 / 255 + 1e-6
    assert main(*gen(files, "--loop", "--frames", 8, "--out", tmp_path / "loop")) == 0
    assert not torch.equal(load_video(tmp_path / "loop", 8, 16, 16), kf)
    assert main("generate", "--model", files / "base.safetensors", "--steps", 2, "--quiet", "--frames", 16,
                "--prompt", "0: a red cat; 8: a cat", "--out", tmp_path / "travel") == 0
    assert load_video(tmp_path / "travel", 16, 16, 16).shape[2] == 16


def test_masks_follow_comfyui_convention_white_is_generated(files, tmp_path):
    """mask.png is white on the right half: inpaint keeps the left half of the clip (exactly, with known-pixel
    replacement) and generates the right; cinemagraph keeps the left half still and animates the right."""
    source = load_video(files / "input.gif", 4, 16, 16)
    assert main(*gen(files, "--mode", "inpaint", "--video", files / "input.gif", "--mask", files / "mask.png",
                     "--frames", 4, "--out", tmp_path / "inp")) == 0
    out = load_video(tmp_path / "inp", 4, 16, 16)
    assert (out[..., :8] - source[..., :8]).abs().max() <= 2 / 255 + 1e-6  # kept (uint8 rounding)
    assert (out[..., 8:] - source[..., 8:]).abs().mean() > 0.1  # generated
    assert main(*gen(files, "--mode", "cinemagraph", "--image", files / "image.png", "--mask", files / "mask.png",
                     "--frames", 4, "--out", tmp_path / "cine")) == 0
    cine = load_video(tmp_path / "cine", 4, 16, 16)
    still = (cine[:, :, 1:] - cine[:, :, :1]).abs()
    assert still[..., :8].max() <= 2 / 255 + 1e-6 and still[..., 8:].mean() > 0.05


def test_sdedit_stays_close_to_the_input(files, tmp_path):
    source = load_video(files / "input.gif", 8, 16, 16)
    assert main(*gen(files, "--video", files / "input.gif", "--strength", 0.04, "--steps", 25, "--cfg", 1,
                     "--out", tmp_path / "edit")) == 0
    edited = load_video(tmp_path / "edit", 8, 16, 16)
    assert (edited - source).abs().mean() < 0.05


def test_ssr_and_style(files, tmp_path):
    out = tmp_path / "big"
    assert main(*gen(files, "--frames", 8, "--ssr", files / "ssr.safetensors", "--window", 4, "--overlap", 2,
                     "--fuse", "ramped", "--ssr-steps", 2, "--style", files / "style.safetensors", "--alpha", 0.5,
                     "--out", out)) == 0
    assert load_video(out, 8, 32, 32).shape == (1, 3, 8, 32, 32)
    assert Image.open(out / "frame_0000.png").size == (32, 32)  # the SSR doubled the size


@pytest.mark.parametrize("extra,message", [
    (("--mode", "inpaint", "--image", "{d}/image.png"), "--mask: required by --mode inpaint"),
    (("--mode", "image_to_video",), "--image: required by --mode image_to_video"),
    (("--mode", "outpaint", "--pad", 2, 2, 2, 2), "--image/--video: required by --mode outpaint"),
    (("--mode", "outpaint", "--image", "{d}/image.png", "--pad", 8, 8, 0, 0), "--pad: expected non-negative"),
    (("--image", "{d}/absent.png",), "--image: {d}/absent.png: no such file"),
    (("--image", "{d}/notes.txt",), "--image: {d}/notes.txt: not a readable image"),
    (("--video", "{d}/absent.mp4",), "--video: {d}/absent.mp4: no such file"),
    (("--video", "{d}/input.gif", "--frames", 16), "--video: {d}/input.gif: has 8 frames, 16 are needed"),
    (("--strength", 0.5), "--strength: SDEdit needs --video"),
    (("--video", "{d}/input.gif", "--strength", 1.5), "--strength: expected a value in (0, 1]"),
    (("--window", 4), "--window/--tile: only used with --ssr"),
    (("--ssr", "{d}/ssr.safetensors", "--frames", 8, "--window", 4, "--overlap", 4),
     "--overlap: expected 2 <= overlap < window (4), got 4"),
    (("--mode", "keyframes",), "--keyframe: required by --mode keyframes"),
    (("--mode", "keyframes", "--keyframe", "first={d}/image.png"), "--keyframe: expected FRAME=PNG"),
    (("--mode", "keyframes", "--keyframe", "0={d}/image.png", "--keyframe=-8={d}/image.png"),
     "--keyframe: expected 2 distinct frame numbers"),
    (("--mode", "extend",), "--video: required by --mode extend"),
    (("--mode", "extend", "--video", "{d}/input.gif", "--frames", 16, "--context", 8),
     "--context: expected 1 to 7 known frames"),
    (("--prompt", "0: a red cat; a cat"), "--prompt: expected 'FRAME: prompt' segments"),
    (("--device", "banana"), "--device: expected cpu, cuda, cuda:N, mps or auto"),
    (("--device", "cuda:7"), "--device: 'cuda:7' is not available"),
    (("--ssr", "{d}/base.safetensors",), "--ssr: {d}/base.safetensors is not an SSR model"),
    (("--style", "{d}/ssr.safetensors",),
     "--style: {d}/ssr.safetensors: style weights: key 'conv_in.weight' has shape (16, 6, 3, 3)"),
    (("--style", "{d}/style.safetensors", "--alpha", 2), "--alpha: expected a value in [0, 1]"),
    (("--out", "{d}/clip.avi",), "--out: {d}/clip.avi: unsupported output format '.avi'"),
])
def test_generate_errors_name_the_input(files, capsys, extra, message):
    assert main(*gen(files, "--frames", 8, "--out", files / "never", *[str(a).format(d=files) for a in extra])) == 2
    err = capsys.readouterr().err
    assert err.startswith("lumiere generate: error: ") and message.format(d=files) in err
    assert not (files / "never").exists()


def test_ssr_model_as_base_is_refused(files, capsys):
    assert main("generate", "--model", files / "ssr.safetensors", "--quiet") == 2
    assert "is an SSR model; pass it with --ssr" in capsys.readouterr().err


def test_train_is_wired(capsys):
    with pytest.raises(SystemExit) as e:
        main("train", "--help")
    assert e.value.code == 0 and "--config" in capsys.readouterr().out


def test_eval_is_wired(capsys):
    with pytest.raises(SystemExit) as e:
        main("eval", "--help")
    assert e.value.code == 0


def test_help_lists_commands_without_importing_them():
    proc = run("--help")
    for name in ("generate", "inspect", "bench", "train", "eval"):
        assert name in proc.stdout


def test_only_the_projects_errors_are_one_liners(files, capsys, monkeypatch):
    """Bad inputs (also of train and bench) exit 2 with one line; a bug in the library shows its traceback."""
    assert main("bench", "--preset", "huge", "--sections", "peak") == 2
    assert "--preset: expected one of" in capsys.readouterr().err
    assert main("train", "t2i", "--config", files / "absent.json") == 2
    assert "--config: cannot read" in capsys.readouterr().err
    import lumiere.pipeline

    def broken(*a, **k):
        raise ValueError("an internal inconsistency")  # not an input error: no "name: ..." grammar

    monkeypatch.setattr(lumiere.pipeline, "generate", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(*gen(files, "--frames", 4, "--out", files / "never.webp"))


# ---------------------------------------------------------------- nothing lost or changed silently (subprocess)


@pytest.mark.parametrize("flag", ["--frames", "--width", "--height", "--threads", "--steps"])
def test_zero_is_an_error_not_the_default(files, flag):
    proc = run(*gen(files, flag, 0, "--out", files / "never.webp"), check_rc=2)
    assert proc.stderr.strip() == (f"lumiere generate: error: {flag}: expected a positive whole number, got 0 "
                                   "(leave the flag out for the default)")
    assert not (files / "never.webp").exists()


@pytest.mark.parametrize("extra,message", [
    (("--height", 17), "--height: expected a multiple of "),
    (("--width", 17), "--width: expected a multiple of "),
    (("--frames", 16, "--prompt", "0: a red cat; 16: a cat"),
     "--prompt: expected segments starting within the clip's 16 frames (0-15), got start frame(s) [16]"),
])
def test_errors_name_the_flag(files, tmp_path, extra, message):
    proc = run(*gen(files, *extra, "--out", tmp_path / "x.webp"), check_rc=2)
    assert proc.stderr.startswith(f"lumiere generate: error: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_oversized_run_refused_up_front_by_the_memory_estimate(files, tmp_path):
    import time

    start = time.monotonic()
    proc = run(*gen(files, "--frames", 4096, "--width", 1024, "--height", 1024, "--out", tmp_path / "x.webp"),
               check_rc=2)
    assert proc.stderr.startswith("lumiere generate: error: --frames/--height/--width: expected a video whose "
                                  "sampling fits the "), proc.stderr
    assert "4096 frames of 1024x1024 needing about" in proc.stderr
    assert time.monotonic() - start < 60 and not (tmp_path / "x.webp").exists()


def test_prompt_losses_are_said_once(files, tmp_path):
    """Characters the encoder cannot read, unknown words and words past its length: one warning each, before
    sampling (not per step), and the clip is still made."""
    out = tmp_path / "x.webp"
    proc = run("generate", "--model", files / "base.safetensors", "--steps", 3, "--frames", 4, "--out", out,
               "--prompt", "a red café 🎈 cat a red cat a red cat", "--negative", "一只红色的圆")
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("lumiere generate: warning: ")]
    assert warnings == [
        "lumiere generate: warning: --prompt: the text encoder reads a-z and 0-9 only; it drops 'é🎈' "
        "(reads 'a red caf cat a red cat a red cat')",
        "lumiere generate: warning: --prompt: the text encoder does not know 'caf' (they encode as 'unknown'); "
        "it knows: a red cat",
        "lumiere generate: warning: --prompt: 10 words, the text encoder reads the first 7; dropped: "
        "'a red cat'",
        "lumiere generate: warning: --negative: the text encoder reads a-z and 0-9 only; it drops '一只红色的圆' "
        "(reads nothing: the empty prompt)",
    ]
    assert proc.stdout.strip() == str(out) and out.exists()
    quiet = run(*gen(files, "--frames", 4, "--out", tmp_path / "y.webp"))  # "a red cat": nothing to say
    assert "warning" not in quiet.stderr


def test_without_torch_the_cli_names_what_to_install(tmp_path):
    """python -S: no site-packages, so no torch (the state of `pip install .` into a fresh venv)."""
    proc = subprocess.run([sys.executable, "-S", "-m", "lumiere", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("lumiere: error: lumiere needs PyTorch, which is not installed in this Python: "
                                   "pip install torch (the build for your machine: "
                                   "https://pytorch.org/get-started/locally/)")


def _site_without(tmp_path, *hidden):
    """A copy of this interpreter's import path as symlinks, less the packages `hidden` (run with python -S)."""
    site = tmp_path / "site"
    site.mkdir()
    for entry in sys.path:
        if entry.endswith("site-packages") and Path(entry).is_dir():
            for item in Path(entry).iterdir():
                if item.name.split(".")[0].split("-")[0] not in hidden and not (site / item.name).exists():
                    (site / item.name).symlink_to(item)
    return site


def test_a_copy_of_the_library_without_its_models_says_so(files, tmp_path):
    """A non-editable install: the library alone in site-packages, no models beside it, run from another folder."""
    import shutil

    site = _site_without(tmp_path, "lumiere", "__editable__", "comfyui_lumiere")
    shutil.copytree(ROOT / "lumiere", site / "lumiere", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    cmd = [sys.executable, "-S", "-m", "lumiere", "generate", "--steps", 1, "--quiet", "--out", "x.webp"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([str(c) for c in cmd], cwd=work, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("lumiere generate: error: --model: expected a Lumiere checkpoint; the default, "
                                  "the shipped demo model, is not at ")
    assert "pass --model PATH" in proc.stderr and not (work / "x.webp").exists()
    (work / "models" / "lumiere").mkdir(parents=True)  # models/lumiere/ in the folder it runs from is found
    shutil.copy(files / "base.safetensors", work / "models" / "lumiere" / "lumiere_demo_base.safetensors")
    proc = subprocess.run([str(c) for c in cmd], cwd=work, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (work / "x.webp").exists()


def test_without_media_packages_saving_is_refused_before_sampling(files, tmp_path):
    site = _site_without(tmp_path, "PIL", "pillow", "av")
    for out, need in (("x.webp", "pillow"), ("x.mp4", "av (PyAV)"), ("frames", "pillow")):
        cmd = [sys.executable, "-S", "-m", "lumiere", *gen(files, "--out", tmp_path / out)]
        proc = subprocess.run([str(c) for c in cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": f"{site}:{ROOT}"})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (f"lumiere generate: error: --out: writing {str(tmp_path / out)!r} needs "
                                       f"{need}: pip install 'comfyui-lumiere[media]' (or pip install "
                                       f"{need.split()[0]})")
        assert not (tmp_path / out).exists()


def test_every_task_of_the_table_has_its_flags():
    """A task added to `conditioning.TASKS` with a new kind of source or need fails here until the CLI reads it."""
    from lumiere.conditioning import TASKS
    for mode, task in TASKS.items():
        assert task.source is None or task.source in cli.SOURCE_FLAGS, mode
        assert all(n in cli.NEED_FLAGS for n in task.needs), mode


def test_direct_mode_is_inpainting_by_another_name(files, tmp_path):
    """--mode direct: the video is C, the mask (white = generate) is 1 - M: the same clip as inpaint."""
    args = ("--video", files / "input.gif", "--mask", files / "mask.png", "--frames", 4)
    assert main(*gen(files, "--mode", "direct", *args, "--out", tmp_path / "direct")) == 0
    assert main(*gen(files, "--mode", "inpaint", *args, "--out", tmp_path / "inp")) == 0
    assert torch.equal(load_video(tmp_path / "direct", 4, 16, 16), load_video(tmp_path / "inp", 4, 16, 16))
