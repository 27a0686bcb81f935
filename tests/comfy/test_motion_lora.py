"""Motion LoRA on your own clips inside a real ComfyUI (in-process nodes here; the bundled workflow over HTTP in
test_server.py): the clip folder, the trainer's LoRA in core's format (Save LoRA Weights, LoraLoaderModelOnly,
Load LoRA Model), strength 0 bit for bit the original, progress and Cancel, named errors, and -- measured on the
shipped demo base -- a diagonal motion the base does not make, learned from six clips and made on held-out
prompts."""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from motion_lora import measure
from ws import cancel_when

ROOT = Path(__file__).resolve().parents[2]
CLIPS = "lumiere_example_motion_clips"


@pytest.fixture(scope="module")
def n(pack):
    return pack.nodes


@pytest.fixture(autouse=True)
def as_comfyui_runs_nodes():
    """Every node here runs under inference mode, as ComfyUI's executor runs them (the trainer leaves it)."""
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def tiny(n):
    with torch.inference_mode():  # as ComfyUI runs nodes (and as the Loader's weights then are)
        model, clip, *_ = n.loader.LumiereLoader.execute("tiny_base.safetensors", "fp32").args
    return model, clip


@pytest.fixture(scope="module")
def example_clips(n):
    """The bundled example clips, in ComfyUI's input folder (where the pack copies them at start-up)."""
    import folder_paths
    path = Path(folder_paths.get_input_directory()) / CLIPS
    if not path.exists():
        shutil.copytree(ROOT / "workflows" / "inputs" / CLIPS, path)
    return path


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def train(n, model, clips, positive, steps=2, layers="temporal", **kw):
    args = dict(steps=steps, learning_rate=0.003, rank=4, layers=layers, batch_size=2, seed=0) | kw
    with torch.inference_mode():
        return n.lora.LumiereTrainLoRA.execute(model, clips, positive, **args).args


def tiny_clips(model, count=2, seed=0):
    cfg = model.model.lumiere_config
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.rand(count, 3, cfg.num_frames, cfg.resolution, cfg.resolution, generator=g) * 2 - 1}


def net_output(model, seed=1):
    """The diffusion model's output with `model`'s patches applied (loaded as core loads it for sampling)."""
    import comfy.model_management as mm
    cfg = model.model.lumiere_config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg.unet.in_channels, cfg.num_frames, cfg.resolution, cfg.resolution, generator=g)
    ctx = torch.randn(1, cfg.text.max_tokens, cfg.unet.context_dim, generator=g)
    mm.load_models_gpu([model], force_full_load=True)
    with torch.no_grad():
        return model.model.diffusion_model(x, torch.full((1,), 0.4), ctx)


def test_clip_folder_reads_the_clips_and_captions(n, tiny, example_clips):
    from lumiere_pack_under_test.lumiere.lora import TRAIN_LOOKS, diagonal_clips
    latent, positive, captions = n.lora.LumiereLoadClipFolder.execute(CLIPS, tiny[1], 16, 32, 32, 8.0).args
    video, texts = diagonal_clips(TRAIN_LOOKS, torch.Generator().manual_seed(0))
    assert latent["samples"].shape == (6, 3, 16, 32, 32) and captions.split("\n") == texts
    assert len(positive) == 6
    assert torch.equal(positive[2][0], encode(tiny[1], texts[2])[0][0])
    assert (latent["samples"] - video).abs().max() <= 1 / 127.5 + 1e-6  # lossless WebP: 8-bit rounding only
    # fitted to another size and fewer frames
    small = n.lora.LumiereLoadClipFolder.execute(CLIPS, tiny[1], 8, 16, 16, 8.0).args[0]["samples"]
    assert small.shape == (6, 3, 8, 16, 16)


def test_clip_folder_errors_name_the_input(n, tiny, example_clips, tmp_path):
    import folder_paths
    for folder in ("../", "no_such_folder", ""):
        with pytest.raises(ValueError, match="folder: expected a folder inside ComfyUI's input folder"):
            n.lora.LumiereLoadClipFolder.execute(folder, tiny[1], 16, 32, 32, 8.0)
    empty = Path(folder_paths.get_input_directory()) / "lumiere_test_empty"
    empty.mkdir(exist_ok=True)
    (empty / "notes.txt").write_text("no videos here")
    with pytest.raises(ValueError, match="folder: expected videos .* got none"):
        n.lora.LumiereLoadClipFolder.execute("lumiere_test_empty", tiny[1], 16, 32, 32, 8.0)
    with pytest.raises(ValueError, match="folder: expected clips of at least 40 frames at 8 fps, got 16 in clip_00"):
        n.lora.LumiereLoadClipFolder.execute(CLIPS, tiny[1], 40, 32, 32, 8.0)
    bad = Path(folder_paths.get_input_directory()) / "lumiere_test_bad"
    bad.mkdir(exist_ok=True)
    (bad / "broken.webp").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="folder: expected videos this ComfyUI can decode, got broken.webp"):
        n.lora.LumiereLoadClipFolder.execute("lumiere_test_bad", tiny[1], 16, 32, 32, 8.0)
    with pytest.raises(ValueError, match="clip: expected a CLIP"):
        n.lora.LumiereLoadClipFolder.execute(CLIPS, None, 16, 32, 32, 8.0)


def test_trained_lora_is_cores_format_and_loads_with_lora_loader_model_only(n, tiny):
    """The trainer's LORA_MODEL has core's keys on the STUNet's temporal layers only (layers=temporal); Save LoRA
    Weights writes it to output/loras, which the pack lists as a `loras` folder; LoraLoaderModelOnly reads every
    key (a patch per adapted layer) and gives the same model as Load LoRA Model in the graph; strength 0 is the
    original bit for bit; the Loader's MODEL is untouched."""
    import comfy.lora
    import comfy.utils
    import folder_paths
    import nodes as core
    from comfy_extras.nodes_train import LoraModelLoader, SaveLoRA
    model, clip = tiny
    before = net_output(model)
    lora, loss_map, steps = train(n, model, tiny_clips(model), encode(clip, "a red circle moving right on black"),
                                  steps=3)
    assert steps == 3 and len(loss_map["loss"]) == 3
    layers = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in lora}
    assert layers and all(k.startswith("diffusion_model.net.") and not k.startswith("diffusion_model.net.unet.")
                          for k in layers)
    assert all(f"{layer}.{part}" in lora for layer in layers for part in ("lora_up.weight", "lora_down.weight",
                                                                          "alpha"))
    assert any(lora[k].abs().sum() > 0 for k in lora if k.endswith("lora_down.weight"))  # it trained
    SaveLoRA.execute(lora, "loras/lumiere_test_lora", steps)
    saved = Path(folder_paths.get_output_directory()) / "loras"
    name = next(p.name for p in saved.glob("lumiere_test_lora_3_steps_*.safetensors"))
    assert name in folder_paths.get_filename_list("loras")  # listed without moving the file
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patches = comfy.lora.load_lora(comfy.utils.load_torch_file(str(saved / name)), key_map)
    assert len(patches) == len(layers)
    from_file = core.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]
    in_graph = LoraModelLoader.execute(model, lora, 1.0).args[0]
    a, b = net_output(from_file), net_output(in_graph)
    assert torch.equal(a, b) and (a - before).abs().max() > 0
    zero = core.LoraLoaderModelOnly().load_lora_model_only(model, name, 0.0)[0]
    assert torch.equal(net_output(zero), before)
    assert torch.equal(net_output(model), before)


def test_all_layers_and_one_prompt_for_every_clip(n, tiny):
    model, clip = tiny
    lora = train(n, model, tiny_clips(model, 3), encode(clip, "a blue square moving up on gray"), steps=1,
                 layers="all")[0]
    assert any(k.startswith("diffusion_model.net.unet.") for k in lora)


def test_one_loaded_video_and_one_prompt(n, tiny):
    """The other route in: one video's IMAGE frames -> Lumiere Frames to Latent -> clips, one CLIP Text Encode."""
    model, clip = tiny
    cfg = model.model.lumiere_config
    frames = torch.rand(cfg.num_frames, cfg.resolution, cfg.resolution, 3, generator=torch.Generator().manual_seed(3))
    clips = n.latent.LumiereFramesToLatent.execute(frames).args[0]
    lora, loss_map, _ = train(n, model, clips, encode(clip, "a green triangle moving down on white"), steps=2)
    assert len(loss_map["loss"]) == 2 and lora


@pytest.mark.parametrize("weight_dtype", ["bf16", "fp8_e4m3fn"])
def test_trains_on_low_precision_weights(n, weight_dtype):
    """A MODEL loaded in bf16 or fp8 trains too (the LoRA itself is fp32; the layers cast as they do for sampling)."""
    model, clip = n.loader.LumiereLoader.execute("tiny_base.safetensors", weight_dtype).args[:2]
    lora, loss_map, _ = train(n, model, tiny_clips(model), encode(clip, "a red circle"), steps=2)
    assert all(v.dtype == torch.float32 for v in lora.values())
    assert all(np.isfinite(loss_map["loss"]))


def test_training_is_seeded(n, tiny):
    model, clip = tiny
    clips, positive = tiny_clips(model), encode(clip, "a red circle moving right on black")
    a, b = train(n, model, clips, positive), train(n, model, clips, positive)
    assert a[1] == b[1] and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


def test_conditioning_channels_are_trained_with(n, tiny):
    """A prompt from Lumiere Conditioning (e.g. image_to_video) trains with its <C, M>; a mix of prompts with and
    without it is an error."""
    model, clip = tiny
    cfg = model.model.lumiere_config
    clips = tiny_clips(model)
    frames = ((clips["samples"][0].movedim(0, -1) + 1) / 2)  # (T, H, W, 3) in 0..1
    pos, neg, _ = n.conditioning.LumiereConditioning.execute(
        encode(clip, "a red circle"), encode(clip, ""), "image_to_video", cfg.num_frames, image=frames,
        width=cfg.resolution, height=cfg.resolution).args
    assert len(train(n, model, clips, pos, steps=1)[1]["loss"]) == 1
    wrong = n.conditioning.LumiereConditioning.execute(encode(clip, "a red circle"), encode(clip, ""),
                                                       "image_to_video", 2 * cfg.num_frames, image=frames).args[0]
    with pytest.raises(ValueError, match=r"positive: expected Lumiere Conditioning of 4 channels for the clips' "):
        train(n, model, clips, wrong)
    with pytest.raises(ValueError, match="positive: expected Lumiere Conditioning on every prompt or on none"):
        train(n, model, clips, pos + encode(clip, "a red circle"))


def test_progress_and_cancel(n, tiny):
    """A progress update per step through core's hook (the server's progress bar), and Cancel (core's interrupt
    flag) stops training at the next step."""
    import comfy.model_management as mm
    import comfy.utils
    model, clip = tiny
    seen = []

    def hook(value, total, preview=None, *args, **kw):  # the server's hook; Cancel pressed at step 1
        seen.append((value, total))
        if total == 50:
            mm.interrupt_current_processing(True)
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        train(n, model, tiny_clips(model), encode(clip, "a red circle"), steps=3)
        # every step on 0.3.75; 0.33 throttles the steps between the first and the last by time
        values = [v for v, _ in seen]
        assert seen[0] == (1, 3) and seen[-1] == (3, 3) and values == sorted(set(values)), seen
        assert all(t == 3 for _, t in seen)
        seen.clear()
        with pytest.raises(mm.InterruptProcessingException):
            train(n, model, tiny_clips(model), encode(clip, "a red circle"), steps=50)
        assert seen == [(1, 50)]  # the first update is always sent; Cancel then stops the next step
    finally:
        mm.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(None)


@pytest.mark.parametrize("case,match", [
    ("image_latent", r"clips: expected a Lumiere video latent \[B, 3, T, H, W\], got \[2, 4, 32, 32\]"),
    ("frames", "clips"),
    ("prompts", r"positive: expected one prompt for all clips or one per clip \(2\), got 3"),
    ("ssr", "model: expected a base Lumiere model"),
    ("t2i", "model: expected a Lumiere video model"),
    ("core_model", "model: expected a MODEL from the Lumiere loader"),
])
def test_bad_inputs_are_named_errors(n, tiny, case, match):
    model, clip = tiny
    clips, positive = tiny_clips(model), encode(clip, "a red circle")
    if case == "image_latent":
        clips = {"samples": torch.zeros(2, 4, 32, 32)}
    elif case == "frames":
        clips = {"samples": clips["samples"][:, :, :3]}
    elif case == "prompts":
        positive = positive * 3
    elif case in ("ssr", "t2i"):
        with torch.inference_mode():
            model = n.loader.LumiereLoader.execute(f"tiny_{'ssr' if case == 'ssr' else 'style'}.safetensors",
                                                   "fp32").args[0]
    elif case == "core_model":
        model = type("NotLumiere", (), {"model": object()})()
    with pytest.raises(ValueError, match=match):
        train(n, model, clips, positive, steps=1)


def test_motion_lora_teaches_a_motion_the_base_does_not_make(pack):
    """The measurement of scripts/motion_lora.py at a small setting, on the shipped demo base: 100 steps on the six
    example clips of a down-right diagonal; four held-out "moving right" prompts (colours, shapes, backgrounds in
    combinations never trained on). The base (strength 0, bit for bit the Loader's model) moves them right, on
    the axis; the LoRA at strength 1 moves at least 3 of 4 on the diagonal."""
    res = measure(pack, steps=100, clips=4, sample_steps=10, strengths=(0.0, 1.0), log=print)
    print(res)
    base, lora = res["strength_0"], res["strength_1"]
    assert res["strength_0_equals_base_bitwise"]
    assert base["on_axis_rate"] >= 0.75 and base["on_target_rate"] == 0.0
    assert lora["on_target_rate"] >= 0.75 and lora["across_over_along"] > 0.5


# ---- over HTTP, on a real server with the bundled workflow ----------------------------------------------------

def lora_prompt(api_workflows, steps: int, prefix: str) -> dict:
    """The bundled motion_lora workflow (API format) training `steps` steps, its files under `prefix`."""
    p = json.loads(json.dumps(api_workflows["motion_lora"]))
    train_id = next(k for k, v in p.items() if v["class_type"] == "LumiereTrainLoRA")
    p[train_id]["inputs"]["steps"] = steps
    for node in p.values():
        if node["class_type"] == "SaveLoRA":
            node["inputs"]["prefix"] = f"loras/{prefix}"
        elif "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = f"test/{prefix}"
    return p


def sampled_frames(server, prompt: dict, prefix: str) -> np.ndarray:
    """Runs the prompt, with the frames that reach Create Video also saved losslessly, and reads them back."""
    p = json.loads(json.dumps(prompt))
    create = next(n for n in p.values() if n["class_type"] == "CreateVideo")
    p["lossless"] = {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": create["inputs"]["images"], "filename_prefix": f"test/{prefix}_frames", "fps": 8.0,
        "lossless": True, "quality": 100, "method": "default"}}
    webp = next(f for f in server.output_files(server.run(p, timeout=1800)) if f.suffix == ".webp")
    with Image.open(webp) as im:
        return np.stack([np.array(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def test_saved_lora_loads_with_lora_loader_model_only_over_http(comfy_server, api_workflows):
    """The workflow trains and saves a LoRA (output/loras); the server then lists it in LoraLoaderModelOnly, which
    gives the same clip as the workflow's in-graph Load LoRA Model; at strength 0 the clip is the base model's."""
    prefix = f"test_http_lora_{uuid.uuid4().hex[:8]}"
    p = lora_prompt(api_workflows, 10, prefix)
    in_graph = sampled_frames(comfy_server, p, prefix + "_graph")
    names = comfy_server.object_info()["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0]
    name = next(n for n in names if n.startswith(f"{prefix}_10_steps_"))
    apply_id = next(k for k, v in p.items() if v["class_type"] == "LoraModelLoader")
    for k in [k for k, v in p.items() if v["class_type"] in ("LumiereLoadClipFolder", "LumiereTrainLoRA", "SaveLoRA",
                                                            "LossGraphNode")]:
        del p[k]
    loader_id = next(k for k, v in p.items() if v["class_type"] == "LumiereLoader")
    p[apply_id] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": [loader_id, 0], "lora_name": name, "strength_model": 1.0}}
    assert np.array_equal(sampled_frames(comfy_server, p, prefix + "_file"), in_graph)
    p[apply_id]["inputs"]["strength_model"] = 0.0
    zero = sampled_frames(comfy_server, p, prefix + "_zero")
    sampler = next(v for v in p.values() if v["class_type"] == "LumiereSampler")
    sampler["inputs"]["model"] = [loader_id, 0]
    del p[apply_id]
    assert np.array_equal(sampled_frames(comfy_server, p, prefix + "_base"), zero)
    assert not np.array_equal(zero, in_graph)


def test_training_progress_and_cancel_over_http(comfy_server, api_workflows):
    """The trainer reports its progress over the websocket, and the UI's Cancel (POST /interrupt) stops it
    within a step; the server serves the next prompt."""
    pytest.importorskip("aiohttp", reason="websocket tests need aiohttp (the ComfyUI venv has it)")
    p = lora_prompt(api_workflows, 1000, f"test_cancel_{uuid.uuid4().hex[:8]}")
    train_id = next(k for k, v in p.items() if v["class_type"] == "LumiereTrainLoRA")
    _, ws = cancel_when(comfy_server, p, lambda m: m.get("type") == "progress" and m["data"]["node"] == train_id
                        and m["data"]["value"] >= 3, timeout=600)
    progress = [d for d in ws.of_type("progress") if d["node"] == train_id]
    values = [d["value"] for d in progress]  # every step on 0.3.75; 0.33.0 sends fewer (it throttles them)
    assert values == sorted(values) and values[0] >= 1 and all(d["max"] == 1000 for d in progress)
    assert values[-1] < 1000
