"""Against a real headless ComfyUI 0.3.75 with the pack installed: registration, every bundled workflow run
over HTTP with its outputs checked, bad graphs answered with node errors, progress/previews/Cancel."""
from __future__ import annotations

import io
import json
import time
import uuid

import av
import numpy as np
import pytest
from PIL import Image, ImageSequence

from comfy_harness import execution_error, http
from comfy_fixtures import ROOT, model_substitutes
from lumiere.checkpoint import read_config
from ws import WsListener, cancel_when

NODE_IDS = ["LumiereLoader", "LumiereSampler", "LumiereConditioning", "LumiereSSRUpscale", "LumiereStylize",
            "LumiereEmptyVideo", "LumiereFramesToLatent", "LumiereLatentToFrames", "LumiereLoadClipFolder",
            "LumiereTrainLoRA"]
BUNDLED = ["text_to_video", "text_to_video_ssr", "image_to_video", "inpainting", "outpainting", "cinemagraph",
           "stylized", "video_to_video", "interpolate", "loop", "extend", "long_video_prompt_travel",
           "external_text_encoder", "motion_lora", "text_to_video_4step"]


def model_file(server, name: str):
    for folder in (ROOT / "models" / "lumiere", server.base_dir / "models" / "lumiere"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(name)


def expected_shape(server, workflow: str) -> tuple[int, int, int]:
    """(frames, height, width) of a bundled workflow's video with the models this run uses."""
    names = model_substitutes()
    base = read_config(model_file(server, names["lumiere_external_base.safetensors" if workflow ==
                                                 "external_text_encoder" else "lumiere_demo_base.safetensors"]))
    if workflow == "outpainting":
        return base.num_frames, 32, 32  # the example clip's first frames at 16x16 + 8 px on each side
    if workflow in ("extend", "long_video_prompt_travel"):  # frame counts set in the workflow
        return {"extend": 32, "long_video_prompt_travel": 48}[workflow], base.resolution, base.resolution
    r = base.resolution * (2 if workflow == "text_to_video_ssr" else 1)
    return base.num_frames, r, r


def read_video(path) -> np.ndarray:
    with av.open(str(path)) as f:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])


def saved_videos(server, entry) -> list:
    return [p for p in server.output_files(entry) if p.suffix == ".mp4"]


def free_cache(server):
    """POST /free resets the execution cache, so the next identical prompt really runs again."""
    assert http(server.url + "/free", {"free_memory": True})[0] == 200
    time.sleep(1.0)


def cached_nodes(entry) -> set[str]:
    return {n for kind, d in entry["status"]["messages"] if kind == "execution_cached" for n in d["nodes"]}


def with_prefix(prompt: dict, prefix: str) -> dict:
    for node in prompt.values():
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = prefix
    return prompt


def sampler_id(prompt: dict) -> str:
    return next(k for k, n in prompt.items() if n["class_type"] in ("LumiereSampler", "LumiereLongSampler", "KSampler"))


# ---- registration ------------------------------------------------------------------------------------------------

def test_every_node_registered_with_tooltips(comfy_server, object_info):
    missing = [n for n in NODE_IDS if n not in object_info]
    assert not missing, f"not in /object_info: {missing}\n{comfy_server.log()[-3000:]}"
    for node_id in NODE_IDS:
        info = object_info[node_id]
        assert info["category"].startswith("Lumiere/"), node_id
        assert info["display_name"] and info["description"], node_id
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    log = comfy_server.log()
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if "lumiere" in line.lower())


def test_in_the_tested_range_and_example_inputs_offered(comfy_server, object_info):
    """On a tested core the pack logs no version warning; the loaders offer the workflows' example inputs (copied
    into input/ at start-up), so every bundled workflow opens with values the front-end lists."""
    assert "outside the tested" not in comfy_server.log()

    def options(node, name):
        spec = object_info[node]["input"]["required"][name]
        return spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    assert {"lumiere_example_still.png", "lumiere_example_last.png"} <= set(options("LoadImage", "image"))
    assert "lumiere_example_mask.png" in options("LoadImageMask", "image")
    assert "lumiere_example_clip.mp4" in options("LoadVideo", "file")
    assert "lumiere_example_motion_clips" in options("LumiereLoadClipFolder", "folder")  # a folder of clips


def test_model_folder_lists_safetensors_only(comfy_server, object_info):
    (comfy_server.base_dir / "models" / "lumiere" / "README.txt").write_text("not a model")
    options = comfy_server.object_info()["LumiereLoader"]["input"]["required"]["ckpt_name"][1]["options"]
    assert "tiny_base.safetensors" in options and "README.txt" not in options


def test_workflows_listed_as_templates(comfy_server):
    """ComfyUI offers the bundled workflows in its template browser, under the pack's folder name."""
    from comfy_harness import PACK_LINK_NAME
    status, templates = comfy_server.get("/workflow_templates")
    assert status == 200 and sorted(templates.get(PACK_LINK_NAME, [])) == sorted(BUNDLED), templates


def test_every_template_has_its_thumbnail(comfy_server):
    """The template browser shows `<name>.jpg` beside each custom-node workflow: every bundled one has a real
    image there (frames of what it produces), served by ComfyUI."""
    from comfy_harness import PACK_LINK_NAME
    for name in BUNDLED:
        status, body = comfy_server.get(f"/api/workflow_templates/{PACK_LINK_NAME}/{name}.jpg")
        assert status == 200, name
        img = Image.open(io.BytesIO(body))
        assert img.format == "JPEG" and min(img.size) >= 128 and np.asarray(img).std() > 5, name


def test_the_server_runs_on_the_harness_threads(comfy_server):
    """The harness starts ComfyUI with OMP_NUM_THREADS (the caller's, else half the cores), not torch's default of
    one thread per core (~4x slower on a busy 2-core machine), and says so in the log."""
    import psutil
    from comfy_harness import server_threads
    assert comfy_server.threads == server_threads()
    assert psutil.Process(comfy_server.proc.pid).environ()["OMP_NUM_THREADS"] == str(comfy_server.threads)
    assert f"OMP_NUM_THREADS={comfy_server.threads}" in comfy_server.log().splitlines()[0]


# ---- bundled workflows ---------------------------------------------------------------------------------------

def test_committed_workflows_are_the_generators(object_info):
    """workflows/*.json are scripts/make_workflows.py's graphs (rerun it after changing them): the same nodes, and
    every input the generator sets has its value (a newer core's added widgets take their defaults)."""
    from comfy_harness import workflow_to_api
    from make_workflows import graphs
    generated = graphs()
    assert sorted(generated) == sorted(BUNDLED)
    for name, graph in generated.items():
        committed = workflow_to_api(json.loads((ROOT / "workflows" / f"{name}.json").read_text()), object_info)
        assert sorted(committed) == sorted(graph), name
        for k, node in graph.items():
            assert committed[k]["class_type"] == node["class_type"], (name, k)
            for key, value in node["inputs"].items():
                assert committed[k]["inputs"].get(key) == value, (name, k, key, committed[k]["inputs"].get(key))


def test_the_workflows_fit_a_users_image_with_area(api_workflows):
    """Every Image Scale that fits a user's image or video to the model is "area" (a box average: antialiased on
    the 10-16x downscale of a photo; bilinear aliased it, 24 dB from an antialiased fit against area's 36)."""
    scales = [(name, n) for name, p in api_workflows.items() for n in p.values() if n["class_type"] == "ImageScale"]
    assert len(scales) >= 5
    assert all(n["inputs"]["upscale_method"] == "area" for _, n in scales), scales


def read_webp(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.stack([np.array(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def with_lossless_frames(prompt: dict, prefix: str) -> dict:
    """The same prompt, saving the frames that reach CreateVideo losslessly too (h264 encoding is not bitwise
    reproducible here, so exact comparisons use these)."""
    p = with_prefix(json.loads(json.dumps(prompt)), prefix)
    create = next(n for n in p.values() if n["class_type"] == "CreateVideo")
    p["lossless"] = {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": create["inputs"]["images"], "filename_prefix": prefix + "_frames", "fps": 8.0, "lossless": True,
        "quality": 100, "method": "default"}}
    return p


def run_and_read(server, prompt: dict, prefix: str):
    entry = server.run(with_lossless_frames(prompt, prefix))
    files = server.output_files(entry)
    mp4 = [f for f in files if f.suffix == ".mp4"]
    webp = [f for f in files if f.suffix == ".webp"]
    assert len(mp4) == 1 and len(webp) == 1, entry["outputs"]
    return entry, read_video(mp4[0]), read_webp(webp[0])


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_workflow_runs(comfy_server, api_workflows, name):
    """Runs and saves an mp4 of the expected frames and size, not blank; the same seed gives the same frames."""
    prompt = api_workflows[name]
    t0 = time.time()
    _, video, frames = run_and_read(comfy_server, prompt, f"test/{name}_a")
    shape = expected_shape(comfy_server, name)
    assert video.shape[:3] == shape and frames.shape[:3] == shape
    assert frames.std() > 1.0, "blank video"
    print(f"{name}: {frames.shape} in {time.time() - t0:.1f}s")

    # POST /free is applied by the prompt worker between prompts, asynchronously: on a busy machine the next prompt
    # can still meet the old cache, so free and run again (a bounded number of times) until the sampler reruns
    for attempt in range(3):
        free_cache(comfy_server)
        second, _, again = run_and_read(comfy_server, prompt, f"test/{name}_b{attempt}")
        if sampler_id(prompt) not in cached_nodes(second):
            break
    assert sampler_id(prompt) not in cached_nodes(second), "the sampler did not run again"
    np.testing.assert_array_equal(again, frames)


def test_core_ksampler_and_sampler_custom_advanced(comfy_server, api_workflows):
    """The MODEL works with core samplers, not only the pack's."""
    base = api_workflows["text_to_video"]
    s = sampler_id(base)
    inputs = base[s]["inputs"]
    ks = dict(base)
    ks[s] = {"class_type": "KSampler", "inputs": {
        "model": inputs["model"], "positive": inputs["positive"], "negative": inputs["negative"],
        "latent_image": inputs["latent"], "seed": 3, "steps": 3, "cfg": 2.0, "sampler_name": "euler",
        "scheduler": "karras", "denoise": 1.0}}
    assert saved_videos(comfy_server, comfy_server.run(with_prefix(ks, "test/core_ksampler")))
    adv = dict(base)
    adv.update({
        "30": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "31": {"class_type": "CFGGuider", "inputs": {"model": inputs["model"], "positive": inputs["positive"],
                                                     "negative": inputs["negative"], "cfg": 2.0}},
        "32": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "33": {"class_type": "BasicScheduler", "inputs": {"model": inputs["model"], "scheduler": "karras",
                                                          "steps": 3, "denoise": 1.0}},
    })
    adv[s] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["30", 0], "guider": ["31", 0], "sampler": ["32", 0], "sigmas": ["33", 0],
        "latent_image": inputs["latent"]}}
    assert saved_videos(comfy_server, comfy_server.run(with_prefix(adv, "test/core_custom_advanced")))


def test_core_context_windows_with_conditioning(comfy_server, api_workflows):
    """Core ContextWindowsManual (dim 2) + core KSampler on image-to-video: the <C, M> conditioning is sliced per
    window (core 0.3.75 does not slice c_concat; the model does)."""
    base = read_config(model_file(comfy_server, model_substitutes()["lumiere_demo_base.safetensors"]))
    m = 2 ** sum(base.temporal.temporal_down)
    p = json.loads(json.dumps(api_workflows["image_to_video"]))
    s = sampler_id(p)
    inputs = p[s]["inputs"]
    p["40"] = {"class_type": "ContextWindowsManual", "inputs": {
        "model": inputs["model"], "context_length": 2 * m, "context_overlap": m, "context_schedule": "standard_static",
        "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid", "dim": 2}}
    # widgets newer cores added (0.33.0: freenoise, retain index lists, ...) at their defaults, as the front-end
    from comfy_harness import is_widget, widget_default
    spec = comfy_server.object_info()["ContextWindowsManual"]["input"]["required"]
    p["40"]["inputs"] = {**{k: widget_default(v) for k, v in spec.items() if is_widget(v)}, **p["40"]["inputs"]}
    if "causal_window_fix" in spec:  # on by default there: adds an anchor frame to windows (9, not 8 frames)
        p["40"]["inputs"]["causal_window_fix"] = False
    p[s] = {"class_type": "KSampler", "inputs": {
        "model": ["40", 0], "positive": inputs["positive"], "negative": inputs["negative"],
        "latent_image": inputs["latent"], "seed": 0, "steps": 3, "cfg": 2.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1.0}}
    assert saved_videos(comfy_server, comfy_server.run(with_prefix(p, "test/context_windows")))


def test_ssr_multidiffusion_over_windows(comfy_server, api_workflows):
    """SSR over a 16-frame clip with 4-frame windows (overlap 2): several windows, fused, 2x the size."""
    names = model_substitutes()
    p = {
        "1": {"class_type": "LumiereLoader", "inputs": {"ckpt_name": names["lumiere_demo_ssr.safetensors"]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a blue square moving down"}},
        "3": {"class_type": "LoadVideo", "inputs": {"file": "lumiere_example_clip.mp4"}},
        "4": {"class_type": "GetVideoComponents", "inputs": {"video": ["3", 0]}},
        "5": {"class_type": "LumiereSSRUpscale", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "frames": ["4", 0], "scale": 2,
            "window": 4, "overlap": 2, "fuse": "ramped", "seed": 0, "steps": 3, "cfg": 1.0,
            "sampler_name": "ddim", "scheduler": "normal"}},
        "6": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["5", 0], "filename_prefix": "test/ssr_windows",
                                                           "fps": 8.0, "lossless": True, "quality": 80,
                                                           "method": "default"}},
    }
    entry = comfy_server.run(p)
    webp = Image.open(comfy_server.output_files(entry)[0])
    assert webp.n_frames == 16 and webp.size == (64, 64)


# ---- bad graphs -------------------------------------------------------------------------------------------------

def expect_node_error(server, prompt, node_id: str, words: list[str]):
    """A bad graph: HTTP 400 with node_errors for node_id, or an execution_error raised by node_id; the message
    names the problem. Then the server still runs the next prompt."""
    status, body = server.queue(prompt)
    if status == 400:
        assert node_id in body.get("node_errors", {}), body
        text = str(body["node_errors"][node_id])
    else:
        entry = server.wait(body["prompt_id"])
        err = execution_error(entry)
        assert entry["status"]["status_str"] == "error" and err, entry["status"]
        assert err["node_id"] == node_id, err
        text = err["exception_message"]
    for w in words:
        assert w in text, text
    return text


@pytest.fixture()
def still_alive(comfy_server, api_workflows):
    yield
    entry = comfy_server.run(with_prefix(api_workflows["text_to_video"], f"test/alive_{uuid.uuid4().hex[:6]}"))
    assert saved_videos(comfy_server, entry)


def test_bad_mask_size(comfy_server, api_workflows, still_alive):
    p = dict(api_workflows["inpainting"])
    p["40"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 24, "height": 20}}
    cond = next(k for k, n in p.items() if n["class_type"] == "LumiereConditioning")
    # unfitted (width / height 0): a mask of another size is an error naming it; fitted (the bundled default) it
    # is resized with the clip
    p[cond] = {**p[cond], "inputs": {**p[cond]["inputs"], "mask": ["40", 0], "width": 0, "height": 0}}
    expect_node_error(comfy_server, p, cond, ["mask", "32x32"])
    p[cond]["inputs"].update(width=api_workflows["inpainting"][cond]["inputs"]["width"],
                             height=api_workflows["inpainting"][cond]["inputs"]["height"])
    assert saved_videos(comfy_server, comfy_server.run(with_prefix(p, "test/mask_fitted")))


def test_frames_not_divisible(comfy_server, api_workflows, still_alive):
    p = dict(api_workflows["text_to_video"])
    empty = next(k for k, n in p.items() if n["class_type"] == "LumiereEmptyVideo")
    p[empty] = {**p[empty], "inputs": {**p[empty]["inputs"], "frames": 7}}
    expect_node_error(comfy_server, p, sampler_id(p), ["latent:", "multiple of", "got 7"])


def test_missing_model_file(comfy_server, api_workflows, still_alive):
    p = dict(api_workflows["text_to_video"])
    loader = next(k for k, n in p.items() if n["class_type"] == "LumiereLoader")
    p[loader] = {**p[loader], "inputs": {"ckpt_name": "no_such_model.safetensors"}}
    expect_node_error(comfy_server, p, loader, ["ckpt_name", "no_such_model.safetensors"])


def test_alpha_out_of_range(comfy_server, api_workflows, still_alive):
    p = dict(api_workflows["stylized"])
    st = next(k for k, n in p.items() if n["class_type"] == "LumiereStylize")
    p[st] = {**p[st], "inputs": {**p[st]["inputs"], "alpha": 1.5}}
    expect_node_error(comfy_server, p, st, ["alpha"])


def test_corrupt_model_file(comfy_server, api_workflows, still_alive):
    bad = comfy_server.base_dir / "models" / "lumiere" / "test_corrupt.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    p = dict(api_workflows["text_to_video"])
    loader = next(k for k, n in p.items() if n["class_type"] == "LumiereLoader")
    p[loader] = {**p[loader], "inputs": {"ckpt_name": bad.name}}
    expect_node_error(comfy_server, p, loader, [bad.name, "not a safetensors file"])


# ---- progress, previews, Cancel ------------------------------------------------------------------------------------

def long_run(api_workflows, steps: int, prefix: str, frames: int | None = None) -> dict:
    p = with_prefix(json.loads(json.dumps(api_workflows["text_to_video"])), prefix)
    s = sampler_id(p)
    p[s]["inputs"].update(steps=steps, seed=int(time.time()))
    if frames:
        empty = next(n for n in p.values() if n["class_type"] == "LumiereEmptyVideo")
        empty["inputs"]["frames"] = frames
    return p


def test_progress_and_whole_clip_previews(comfy_server, api_workflows):
    """Core previews (the server runs --preview-method latent2rgb) arrive one per step, each a grid of every frame
    (3 x the frame multiple: a non-square grid, so a single frame cannot pass for it)."""
    base = read_config(model_file(comfy_server, model_substitutes()["lumiere_demo_base.safetensors"]))
    frames = 3 * 2 ** sum(base.temporal.temporal_down)
    cols = int(np.ceil(np.sqrt(frames)))
    rows = int(np.ceil(frames / cols))
    pytest.importorskip("aiohttp", reason="websocket tests need aiohttp (the ComfyUI venv has it)")
    client = uuid.uuid4().hex
    ws = WsListener(comfy_server.url, client).start()
    try:
        p = long_run(api_workflows, 5, "test/previews", frames)
        status, body = comfy_server.queue(p, client_id=client)
        assert status == 200, body
        assert comfy_server.wait(body["prompt_id"])["status"]["status_str"] == "success"
        time.sleep(0.5)
    finally:
        ws.stop()
    progress = [d for d in ws.of_type("progress") if d["node"] == sampler_id(p)]
    assert [d["value"] for d in progress] == [1, 2, 3, 4, 5] and progress[-1]["max"] == 5
    assert len(ws.previews) == 5
    event, kind, data = ws.previews[-1]
    img = Image.open(io.BytesIO(data))
    assert (event, kind, img.format) == (1, 1, "JPEG")
    # the server scales previews to fit 512 px: compare the grid's aspect ratio
    assert abs(img.size[0] / img.size[1] - cols / rows) < 0.02, (img.size, cols, rows)


def test_cancel_interrupts_sampling(comfy_server, api_workflows):
    pytest.importorskip("aiohttp", reason="websocket tests need aiohttp (the ComfyUI venv has it)")
    p = long_run(api_workflows, 1000, "test/cancel")
    _, ws = cancel_when(comfy_server, p, lambda m: m.get("type") == "progress" and m["data"]["value"] >= 2)
    values = [d["value"] for d in ws.of_type("progress") if d["node"] == sampler_id(p)]
    assert max(values) < 1000


def test_video_in_video_out_keeps_the_inputs_frame_rate(comfy_server, api_workflows):
    """video_to_video writes at the input video's frame rate (here 12 fps; the model's is another), through core
    Get Video Components -> Create Video."""
    from fractions import Fraction
    name = "lumiere_test_12fps.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(comfy_server.base_dir / "input" / name), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(16):
            frame = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    base = read_config(model_file(comfy_server, model_substitutes()["lumiere_demo_base.safetensors"]))
    assert base.fps != 12
    p = with_prefix(json.loads(json.dumps(api_workflows["video_to_video"])), "test/fps")
    load = next(k for k, n in p.items() if n["class_type"] == "LoadVideo")
    p[load]["inputs"]["file"] = name
    entry = comfy_server.run(p)
    mp4 = [f for f in comfy_server.output_files(entry) if f.suffix == ".mp4"]
    assert len(mp4) == 1
    with av.open(str(mp4[0])) as f:
        assert Fraction(f.streams.video[0].average_rate) == 12


# ---- a user's own media: full-size stills and long clips are fitted to the model ---------------------------------

USER_MEDIA_WORKFLOWS = ["image_to_video", "interpolate", "cinemagraph", "inpainting",
                        "outpainting", "video_to_video", "extend"]


@pytest.fixture(scope="module")
def user_media(comfy_server) -> dict[str, str]:
    """A 1920x1080 still, a 1920x1080 mask, and a 1280x720 clip of 64 frames at 24 fps with a 1280x720 mask,
    made here, in the server's input folder."""
    folder = comfy_server.base_dir / "input"
    yy, xx = np.mgrid[0:1080, 0:1920]
    still = np.stack([(xx * 255 // 1919), (yy * 255 // 1079), np.full_like(xx, 90)], -1).astype(np.uint8)
    Image.fromarray(still).save(folder / "lumiere_test_still_1080p.png")
    mask = np.zeros((1080, 1920), np.uint8)
    mask[270:810, 480:1440] = 255
    Image.fromarray(mask).save(folder / "lumiere_test_mask_1080p.png")
    Image.fromarray(mask[::3, ::3][:720, :1280]).resize((1280, 720)).save(folder / "lumiere_test_mask_720p.png")
    with av.open(str(folder / "lumiere_test_clip_720p.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        y, x = np.mgrid[0:720, 0:1280]
        for t in range(64):
            frame = np.stack([(x + 8 * t) % 256, (y + 4 * t) % 256, np.full_like(x, 60)], -1).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return {"still": "lumiere_test_still_1080p.png", "still_mask": "lumiere_test_mask_1080p.png",
            "clip": "lumiere_test_clip_720p.mp4", "clip_mask": "lumiere_test_mask_720p.png"}


@pytest.mark.parametrize("name", USER_MEDIA_WORKFLOWS)
def test_a_users_full_size_media_run_at_the_models_size(comfy_server, api_workflows, user_media, name):
    """Each workflow that takes a user's image or video fits a 1080p still / a 64-frame 720p clip (and its mask)
    to the model's size and frames: it succeeds (the prompt's timeout bounds its time) with the usual shape."""
    p = with_prefix(json.loads(json.dumps(api_workflows[name])), f"test/user_{name}")
    video_in = any(n["class_type"] == "LoadVideo" for n in p.values())
    for n in p.values():
        if n["class_type"] == "LoadImage":
            n["inputs"]["image"] = user_media["still"]
        elif n["class_type"] == "LoadImageMask":
            n["inputs"]["image"] = user_media["clip_mask" if video_in else "still_mask"]
        elif n["class_type"] == "LoadVideo":
            n["inputs"]["file"] = user_media["clip"]
    entry = comfy_server.run(p, timeout=900)
    videos = saved_videos(comfy_server, entry)
    assert len(videos) == 1
    assert read_video(videos[0]).shape[:3] == expected_shape(comfy_server, name)


def test_video_to_video_keeps_the_audio(comfy_server, api_workflows):
    """The input clip's audio reaches the saved video (Get Video Components -> Create Video)."""
    name = "lumiere_test_with_audio.mp4"
    with av.open(str(comfy_server.base_dir / "input" / name), "w") as out:
        video = out.add_stream("libx264", rate=8)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for t in range(16):
            frame = np.full((32, 32, 3), 16 * t, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)[None]
        for k in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k:k + 1024]), format="fltp",
                                               layout="mono")
            chunk.sample_rate = 16000
            out.mux(audio.encode(chunk))
        out.mux(video.encode())
        out.mux(audio.encode())
    p = with_prefix(json.loads(json.dumps(api_workflows["video_to_video"])), "test/audio")
    load = next(k for k, n in p.items() if n["class_type"] == "LoadVideo")
    p[load]["inputs"]["file"] = name
    mp4 = saved_videos(comfy_server, comfy_server.run(p))
    assert len(mp4) == 1
    with av.open(str(mp4[0])) as f:
        assert len(f.streams.audio) == 1 and len(f.streams.video) == 1


def test_an_oversized_image_is_refused_and_the_next_prompt_served(comfy_server, api_workflows):
    """An 8192x8192 image into Conditioning with no fitting (width / height 0): a named error before the clip is
    built (the server's memory stays bounded), and the server serves the next prompt."""
    import psutil
    name = "lumiere_test_8192.png"
    yy, xx = np.mgrid[0:8192, 0:8192]
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx // 16) % 256], -1).astype(np.uint8)).save(
        comfy_server.base_dir / "input" / name)
    p = with_prefix(json.loads(json.dumps(api_workflows["image_to_video"])), "test/huge")
    for n in p.values():
        if n["class_type"] == "LoadImage":
            n["inputs"]["image"] = name
        if n["class_type"] == "ImageScale":
            n["inputs"].update(width=8192, height=8192)
        if n["class_type"] == "LumiereConditioning":
            n["inputs"].update(width=0, height=0)
    server = psutil.Process(comfy_server.proc.pid)
    before = server.memory_info().rss
    cond = next(k for k, n in p.items() if n["class_type"] == "LumiereConditioning")
    expect_node_error(comfy_server, p, cond, ["image: expected a video that fits", "fit it to the model"])
    assert server.memory_info().rss - before < 3 * 2 ** 30  # the image itself, not the 16-frame clip
    assert saved_videos(comfy_server, comfy_server.run(with_prefix(api_workflows["text_to_video"], "test/after")))


def test_text_width_mismatch_is_a_named_error_and_the_next_prompt_is_served(comfy_server, api_workflows):
    """A core text encoder of another width (the random CLIP-L, 768) into a model with the built-in encoder's
    width: the sampler names the conditioning and both widths; the server then serves the next prompt."""
    p = with_prefix(json.loads(json.dumps(api_workflows["external_text_encoder"])), "test/width")
    base = model_substitutes()["lumiere_demo_base.safetensors"]
    for n in p.values():
        if n["class_type"] == "LumiereLoader":
            n["inputs"]["ckpt_name"] = base
    width = read_config(model_file(comfy_server, base)).unet.context_dim
    expect_node_error(comfy_server, p, sampler_id(p), ["positive/negative", "768", str(width)])
    assert saved_videos(comfy_server, comfy_server.run(with_prefix(api_workflows["text_to_video"], "test/after2")))


def test_a_graph_of_ones_own_fits_a_photo_by_default(comfy_server, api_workflows, user_media):
    """Conditioning with width / height left out (a graph of one's own, not connected to the Loader's size): the
    1080p still is fitted to the default 32x32 (the demo models' size), not sampled at 1080p."""
    p = with_prefix(json.loads(json.dumps(api_workflows["image_to_video"])), "test/own_graph")
    load = next(k for k, n in p.items() if n["class_type"] == "LoadImage")
    p[load]["inputs"]["image"] = user_media["still"]
    for k in [k for k, n in p.items() if n["class_type"] == "ImageScale"]:
        del p[k]
    cond = next(k for k, n in p.items() if n["class_type"] == "LumiereConditioning")
    inputs = p[cond]["inputs"]
    inputs["image"] = [load, 0]
    del inputs["width"], inputs["height"]
    videos = saved_videos(comfy_server, comfy_server.run(p, timeout=900))
    assert len(videos) == 1
    assert read_video(videos[0]).shape[1:3] == (32, 32)
