"""Regenerate the bundled workflows (workflows/*.json, UI format) and their example inputs (workflows/inputs/, where
absent). tests/comfy/test_server.py checks the committed workflows are these graphs; after changing a graph, rerun
this and scripts/render_workflow_previews.py for the workflows whose output changed.

The graphs are written here in the API format, then turned into UI workflows by the real front-end
(app.loadApiJson + graph.serialize in headless Chromium), so widget order and links are exactly what ComfyUI
expects. Run after scripts/setup_comfy.sh --browser:

    .comfy/venv/bin/python scripts/make_workflows.py [NAME ...]

NAME: only these workflows (file stems); default all.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from comfy_harness import ComfyServer  # noqa: E402
from lumiere.data.procedural import ProceduralClips  # noqa: E402
from lumiere.lora import TRAIN_LOOKS, diagonal_clips  # noqa: E402
from lumiere.pipeline import SSR_DENOISE  # noqa: E402

WORKFLOWS = ROOT / "workflows"
INPUTS = WORKFLOWS / "inputs"
# the shipped demo models (models/lumiere); tests substitute tiny random-weight models for these names
BASE, SSR, STYLE = "lumiere_demo_base.safetensors", "lumiere_demo_ssr.safetensors", "lumiere_demo_style.safetensors"
# the distilled few-step base (issue 20): run by core KSampler at the sampling its checkpoint records
BASE_4STEP, BASE_4STEP_SAMPLING = "lumiere_demo_base_4step.safetensors", dict(steps=4, cfg=1.0, sampler_name="ddim",
                                                                               scheduler="sgm_uniform")
STILL, CLIP, MASK = "lumiere_example_still.png", "lumiere_example_clip.mp4", "lumiere_example_mask.png"
LAST = "lumiere_example_last.png"  # the still's circle at the end of its motion: the second keyframe
# a folder of a user's clips for motion_lora: six shapes moving on the down-right diagonal (a motion the demo base
# does not make), each an animated WebP with its caption ("... moving right ...") in a .txt of the same name
MOTION_CLIPS = "lumiere_example_motion_clips"
# the external-text-encoder route needs the user's files (none ship): a Lumiere checkpoint trained on a core text
# encoder's embeddings (scripts/embed_captions.py), and that encoder; its thumbnail is a card, not a render
EXTERNAL, TEXT_ENCODER = "lumiere_external_base.safetensors", "clip_l.safetensors"
NEEDS_USER_MODELS = ("external_text_encoder",)
MOTION_LORA_STEPS = 150  # the bundled LoRA training: about 2-3 minutes on a CPU (scripts/motion_lora.py measures it)
# The pack copies the example inputs into ComfyUI's input folder at start-up (where absent): plain names, as the
# front-end lists them in Load Image / Load Video.
IN_TEMP = ""


# ---- example inputs ---------------------------------------------------------------------------------------------

def write_inputs() -> None:
    """A still (a red circle) and where it is 15 frames later, a 16-frame clip (a blue square moving down) and a
    centre mask, at 32x32. Each only where absent: the committed ones are what the thumbnails were rendered from,
    and the shapes data has changed since (its clip now moves otherwise); delete a file to write it anew."""
    from PIL import Image
    import av

    INPUTS.mkdir(parents=True, exist_ok=True)
    data = ProceduralClips(size=32, frames=16, split="all")
    g = torch.Generator().manual_seed(0)
    still = data.render_specs([dict(colour="red", shape="circle", direction="right", background="gray")], g)
    clip = data.render_specs([dict(colour="blue", shape="square", direction="down", background="black")], g)

    def to_uint8(frame):  # (3, h, w) in -1..1 -> (h, w, 3) uint8
        return ((frame.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()

    for name, frame in ((STILL, still[0, :, 0]), (LAST, still[0, :, -1])):
        if not (INPUTS / name).exists():
            Image.fromarray(to_uint8(frame)).save(INPUTS / name)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255  # white = the area to regenerate / animate
    if not (INPUTS / MASK).exists():
        Image.fromarray(mask).convert("RGB").save(INPUTS / MASK)
    write_motion_clips(to_uint8)
    if (INPUTS / CLIP).exists():
        return
    with av.open(str(INPUTS / CLIP), "w") as out:
        stream = out.add_stream("libx264", rate=8, options={"crf": "10"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for t in range(clip.shape[2]):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(to_uint8(clip[0, :, t]), format="rgb24")))
        out.mux(stream.encode())


def write_motion_clips(to_uint8) -> None:
    """motion_lora's training clips (`lumiere.lora.diagonal_clips`, seed 0) as lossless 8 fps WebPs + captions."""
    from PIL import Image
    folder = INPUTS / MOTION_CLIPS
    if folder.exists():
        return
    folder.mkdir(parents=True)
    video, captions = diagonal_clips(TRAIN_LOOKS, torch.Generator().manual_seed(0))
    for i, (clip, text) in enumerate(zip(video, captions)):
        frames = [Image.fromarray(to_uint8(clip[:, t])) for t in range(clip.shape[1])]
        frames[0].save(folder / f"clip_{i:02d}.webp", save_all=True, append_images=frames[1:], duration=125, loop=0,
                       lossless=True, quality=100, method=6)
        (folder / f"clip_{i:02d}.txt").write_text(text + "\n")


# ---- graphs (API format) ------------------------------------------------------------------------------------------

def node(class_type: str, title: str | None = None, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs, **({"_meta": {"title": title}} if title else {})}


def base_graph(prompt: str, name: str, model_out=("1", 0), latent=None, positive=None, negative=None,
               denoise=1.0, seed=0) -> dict:
    """Loader -> prompts -> sampler -> frames -> CreateVideo -> SaveVideo; ids 1-9."""
    g = {
        "1": node("LumiereLoader", "Lumiere base model", ckpt_name=BASE),
        "2": node("CLIPTextEncode", "Prompt", text=prompt, clip=["1", 1]),
        "3": node("CLIPTextEncode", "Negative prompt", text="", clip=["1", 1]),
        "5": node("LumiereSampler", model=list(model_out), positive=positive or ["2", 0],
                  negative=negative or ["3", 0], latent=latent or ["4", 0], seed=seed, steps=25, cfg=4.0,
                  sampler_name="ddim", scheduler="normal", denoise=denoise),
        "6": node("LumiereLatentToFrames", latent=["5", 0]),
        "7": node("CreateVideo", images=["6", 0], fps=["1", 5]),
        "8": node("SaveVideo", video=["7", 0], filename_prefix=f"lumiere/{name}", format="auto", codec="auto"),
    }
    if latent is None:
        g["4"] = node("LumiereEmptyVideo", frames=["1", 2], width=["1", 3], height=["1", 4], batch_size=1)
    return g


def conditioned(prompt: str, name: str, mode: str, image, mask=None, pads=(0, 0, 0, 0), extra=None) -> dict:
    """A base graph whose sampler gets <C, M> from Lumiere Conditioning (node 10)."""
    g = base_graph(prompt, name, latent=["10", 2], positive=["10", 0], negative=["10", 1])
    cond = dict(positive=["2", 0], negative=["3", 0], mode=mode, frames=["1", 2], image=image,
                pad_left=pads[0], pad_right=pads[1], pad_top=pads[2], pad_bottom=pads[3],
                replace_known=True, indices="0, -1",  # the given pixels kept exactly
                # a user's media fitted to the model (image and mask together; outpaint keeps its size: the pads
                # make the rest)
                width=0 if mode == "outpaint" else ["1", 3], height=0 if mode == "outpaint" else ["1", 4])
    if mask is not None:
        cond["mask"] = mask
    g["10"] = node("LumiereConditioning", **cond)
    g.update(extra or {})
    return g


def long_video(g: dict, window: int = 0, overlap: int = 0, loop: bool = False) -> dict:
    """The graph with its sampler (node 5) swapped for the Lumiere Long Video Sampler."""
    inputs = {k: v for k, v in g["5"]["inputs"].items() if k != "denoise"}
    g["5"] = node("LumiereLongSampler", **inputs, window=window, overlap=overlap, fuse="ramped", loop=loop)
    return g


def video_input() -> dict:
    return {"20": node("LoadVideo", "Input video", file=CLIP + IN_TEMP), "21": node("GetVideoComponents", video=["20", 0])}


def graphs() -> dict[str, dict]:
    # a user's photo fitted to the model with "area" (a box average: the 10-16x downscale of a photo to 32-64 px
    # is antialiased; "bilinear" samples a few pixels and aliases, 24 dB from an antialiased fit against area's 36;
    # an image smaller than the model is enlarged by repeating pixels)
    still = {"20": node("LoadImage", "Input image", image=STILL + IN_TEMP),
             "21": node("ImageScale", image=["20", 0], upscale_method="area", width=["1", 3], height=["1", 4],
                        crop="center")}
    mask = {"22": node("LoadImageMask", "Mask (white = generate)", image=MASK + IN_TEMP, channel="red")}
    t2v = base_graph("a red circle moving right on gray", "text_to_video")
    ssr = base_graph("a green triangle moving up on black", "text_to_video_ssr")
    ssr.update({
        "11": node("LumiereLoader", "Lumiere SSR model", ckpt_name=SSR),
        "12": node("CLIPTextEncode", "SSR prompt", text="a green triangle moving up on black", clip=["11", 1]),
        "13": node("CLIPTextEncode", "SSR negative prompt", text="", clip=["11", 1]),
        "14": node("LumiereSSRUpscale", model=["11", 0], positive=["12", 0], negative=["13", 0], frames=["6", 0],
                   scale=2, window=8, overlap=4, fuse="ramped", seed=0, steps=20, cfg=1.0, sampler_name="ddim",
                   scheduler="normal", denoise=SSR_DENOISE),
    })
    ssr["7"]["inputs"]["images"] = ["14", 0]
    stylized = base_graph("a blue square moving left on white", "stylized", model_out=("15", 0))
    stylized["15"] = node("LumiereStylize", model=["1", 0], style_name=STYLE, alpha=0.7)
    v2v = base_graph("a green square moving down on black", "video_to_video", latent=["16", 0], denoise=0.6)
    v2v.update(video_input())
    v2v["28"] = node("ImageScale", "Fit to the model's size", image=["21", 0], upscale_method="area",
                     width=["1", 3], height=["1", 4], crop="center")
    v2v["29"] = node("ImageFromBatch", "The model's frames", image=["28", 0], batch_index=0, length=["1", 2])
    v2v["16"] = node("LumiereFramesToLatent", frames=["29", 0])
    small = {"23": node("ImageScale", image=["21", 0], upscale_method="area", width=16, height=16, crop="disabled")}
    inpainting = conditioned("a blue square moving down on black", "inpainting", "inpaint", ["21", 0],
                             mask=["22", 0], extra={**video_input(), **mask})
    outpainting = conditioned("a blue square moving down on black", "outpainting", "outpaint", ["23", 0],
                              pads=(8, 8, 8, 8), extra={**video_input(), **small})
    keyframes = {**still,
                 "24": node("LoadImage", "Last frame", image=LAST + IN_TEMP),
                 "25": node("ImageScale", image=["24", 0], upscale_method="area", width=["1", 3],
                            height=["1", 4], crop="center"),
                 "26": node("ImageBatch", "Keyframes (first, last)", image1=["21", 0], image2=["25", 0])}
    interpolate = conditioned("a red circle moving right on gray", "interpolate", "keyframes", ["26", 0],
                              extra=keyframes)
    # a loop of the model's own length: two circular windows (the seam the eval measures)
    loop = long_video(base_graph("a yellow circle moving right on black", "loop"), loop=True)
    first_frames = {**video_input(), "27": node("ImageFromBatch", "The clip's first 8 frames", image=["21", 0],
                                                batch_index=0, length=8)}
    extend = long_video(conditioned("a blue square moving down on black", "extend", "extend", ["27", 0],
                                    extra=first_frames))
    extend["10"]["inputs"]["frames"] = 32
    # right, then back left, then right again: the circle stays on the 32 px canvas (one direction for 48 frames
    # would carry it out of the frame)
    travel = long_video(base_graph("", "long_video_prompt_travel", positive=["9", 0], seed=1))
    travel["9"] = node("LumierePromptSchedule", "Prompt schedule", clip=["1", 1],
                       schedule="0: a red circle moving right on gray; 16: a red circle moving left on gray; "
                                "32: a red circle moving right on gray")
    del travel["2"]
    travel["4"]["inputs"]["frames"] = 48
    # a video in, a video out at the input's frame rate, with its audio (when the frames map one to one)
    for g, audio in ((v2v, True), (inpainting, True), (outpainting, True), (extend, False)):
        g["7"]["inputs"]["fps"] = ["21", 2]
        if audio:
            g["7"]["inputs"]["audio"] = ["21", 1]
    external = base_graph("a red circle moving right on gray", "external_text_encoder")
    external["1"]["inputs"]["ckpt_name"] = EXTERNAL
    external["30"] = node("CLIPLoader", "Your text encoder (the one the model was trained on)",
                          clip_name=TEXT_ENCODER, type="stable_diffusion")
    for k in ("2", "3"):  # the negative "" is the encoder's empty prompt: the model's unconditional context
        external[k]["inputs"]["clip"] = ["30", 0]
    # a motion LoRA trained on a folder of clips of a diagonal path, saved (output/loras), applied and sampled on a
    # prompt whose colour, shape and background it never saw
    motion_lora = base_graph("a cyan square moving right on white", "motion_lora", model_out=("44", 0))
    motion_lora.update({
        "40": node("LumiereLoadClipFolder", "Your clips (each video with a .txt caption)", folder=MOTION_CLIPS,
                   clip=["1", 1], frames=["1", 2], width=["1", 3], height=["1", 4], fps=["1", 5]),
        "41": node("LumiereTrainLoRA", model=["1", 0], clips=["40", 0], positive=["40", 1], steps=MOTION_LORA_STEPS,
                   learning_rate=0.003, rank=8, layers="temporal", batch_size=2, seed=0),
        "42": node("SaveLoRA", "Save LoRA Weights (output/loras; listed by Load LoRA after a refresh)",
                   lora=["41", 0], prefix="loras/lumiere_motion_lora", steps=["41", 2]),
        "43": node("LossGraphNode", loss=["41", 1], filename_prefix="lumiere_motion_lora_loss"),
        "44": node("LoraModelLoader", "Apply the LoRA (strength 0 = the base model)", model=["1", 0], lora=["41", 0],
                   strength_model=1.0),
    })
    # the distilled base in 4 network calls with core KSampler: 4 steps, cfg 1 (guidance is folded in), ddim,
    # sgm_uniform (= the trailing grid it was trained on; the Loader's info says these settings)
    fast = base_graph("a red circle moving right on gray", "text_to_video_4step")
    fast["1"] = node("LumiereLoader", "Lumiere distilled base (4 steps)", ckpt_name=BASE_4STEP)
    fast["5"] = node("KSampler", "KSampler (core): the distilled model's 4 steps, cfg 1, ddim, sgm_uniform",
                     model=["1", 0], positive=["2", 0], negative=["3", 0], latent_image=["4", 0], seed=0,
                     **BASE_4STEP_SAMPLING, denoise=1.0)
    return {
        "text_to_video_4step": fast,
        "motion_lora": motion_lora,
        "text_to_video": t2v,
        "text_to_video_ssr": ssr,
        "image_to_video": conditioned("a red circle moving right on gray", "image_to_video", "image_to_video",
                                      ["21", 0], extra=still),
        "inpainting": inpainting,
        "outpainting": outpainting,
        # no Image Scale here: the Conditioning node fits the image and the mask together (width / height)
        "cinemagraph": conditioned("a red circle moving right on gray", "cinemagraph", "cinemagraph", ["20", 0],
                                   mask=["22", 0], extra={"20": still["20"], **mask}),
        "stylized": stylized,
        "video_to_video": v2v,
        "interpolate": interpolate,
        "loop": loop,
        "extend": extend,
        "long_video_prompt_travel": travel,
        "external_text_encoder": external,
    }


def write_cards() -> None:
    """A thumbnail card for each workflow that needs the user's own models (it cannot be rendered here)."""
    from PIL import Image, ImageDraw
    lines = {"external_text_encoder": ["Lumiere with your", "own text encoder", "", "Load CLIP -> CLIP Text",
                                       "Encode -> Lumiere Sampler", "", "needs: a checkpoint trained",
                                       "on that encoder's", "embeddings (embed_captions.py)"]}
    for name in NEEDS_USER_MODELS:
        img = Image.new("RGB", (256, 256), (24, 28, 40))
        draw = ImageDraw.Draw(img)
        draw.rectangle((8, 8, 247, 247), outline=(230, 180, 60), width=3)
        for i, text in enumerate(lines[name]):
            draw.text((22, 30 + 22 * i), text, fill=(240, 240, 240))
        img.save(WORKFLOWS / f"{name}.jpg", quality=90)


def main(names: list[str]) -> None:
    """names: only these workflows (default all)."""
    write_inputs()
    write_cards()
    unknown = set(names) - set(graphs())
    if unknown:
        sys.exit(f"no such workflow: {sorted(unknown)}")
    with tempfile.TemporaryDirectory() as tmp, ComfyServer() as server:
        files = []
        for name, g in graphs().items():
            if names and name not in names:
                continue
            files.append(Path(tmp) / f"{name}.json")
            files[-1].write_text(json.dumps(g, indent=1))
        out = subprocess.run(["node", str(ROOT / "tests/browser/comfy_page.mjs"), "api-to-ui", "--url", server.url,
                              "--out-dir", str(WORKFLOWS), *map(str, files)], capture_output=True, text=True)
        print(out.stdout, out.stderr)
        if out.returncode:
            sys.exit("api-to-ui failed")
    print(f"wrote {len(files)} workflows to {WORKFLOWS}")


if __name__ == "__main__":
    main(sys.argv[1:])
