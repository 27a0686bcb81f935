"""Known-pixel replacement in ComfyUI (Lumiere Conditioning `replace_known`, carried by the LATENT's core
"noise_mask") and the SSR start (`denoise`): in-process node tests, and the bundled image_to_video workflow
through the real server, with the Lumiere sampler and with core KSampler."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_fixtures import ROOT
from test_server import run_and_read, sampler_id


# ---- in-process ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def n(pack):
    return pack.nodes


@pytest.fixture(scope="module")
def loaded(n):
    return n.loader.LumiereLoader.execute("tiny_base.safetensors").args[:2]


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def frames_like(t=8, h=16, w=16, seed=0):
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(seed))


def condition(n, clip, mode, replace_known=True, **kw):
    args = dict(frames=8, image=None, mask=None, pad_left=0, pad_right=0, pad_top=0, pad_bottom=0, width=0, height=0)
    args.update(kw)
    return n.conditioning.LumiereConditioning.execute(encode(clip, "a red circle"), encode(clip, ""), mode,
                                                      replace_known=replace_known, **args).args


def sample(n, model, positive, negative, latent, sampler_name="ddim", steps=3):
    return n.sampler.LumiereSampler.execute(model, positive, negative, latent, 0, steps, 2.0, sampler_name,
                                            "normal", 1.0).args[0]["samples"]


def test_replace_known_is_on_by_default_with_a_tooltip(n):
    spec = next(i for i in n.conditioning.LumiereConditioning.define_schema().inputs if i.id == "replace_known")
    assert spec.default is True and "exactly" in spec.tooltip


@pytest.mark.parametrize("sampler_name", ["ddim", "euler", "dpmpp_2m"])
def test_image_to_video_frame0_exact_with_replacement(n, loaded, sampler_name):
    model, clip = loaded
    img = frames_like(1)
    pos, neg, latent = condition(n, clip, "image_to_video", image=img)
    C = pos[0][1]["lumiere_cond"][:, :3]
    assert latent["noise_mask"].shape == (1, 1, 8, 16, 16)
    assert latent["noise_mask"][:, :, 0].max() == 0 and latent["noise_mask"][:, :, 1:].min() == 1
    assert torch.equal(latent["samples"][:, :, 0], C[:, :, 0]) and latent["samples"][:, :, 1:].abs().max() == 0
    out = sample(n, model, pos, neg, latent, sampler_name)
    assert torch.equal(out[:, :, 0], C[:, :, 0])  # bit for bit
    pos, neg, latent = condition(n, clip, "image_to_video", replace_known=False, image=img)
    assert "noise_mask" not in latent and latent["samples"].abs().max() == 0
    plain = sample(n, model, pos, neg, latent, sampler_name)
    assert (plain[:, :, 0] - C[:, :, 0]).abs().max() > 0.05


def test_inpaint_soft_mask_blends_and_hard_region_is_exact(n, loaded):
    model, clip = loaded
    video = frames_like(8)
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1  # generate the centre
    mask[4:12, 12:14] = 0.25  # a feathered edge: 3/4 known
    pos, neg, latent = condition(n, clip, "inpaint", image=video, mask=mask)
    M = pos[0][1]["lumiere_cond"][:, 3:]
    assert M[0, 0, 0, 5, 12] == 1  # the model's M is thresholded (as trained) ...
    nm = latent["noise_mask"]
    assert nm[0, 0, 0, 5, 12] == 0.25 and nm[0, 0, 0, 0, 0] == 0 and nm[0, 0, 0, 8, 8] == 1  # ... replacement blends
    out = sample(n, model, pos, neg, latent)
    v = video.permute(3, 0, 1, 2)[None] * 2 - 1
    keep = torch.ones(16, 16, dtype=torch.bool)
    keep[4:12, 4:14] = False
    assert torch.equal(out[..., keep], v[..., keep])
    soft, c = out[..., 4:12, 12:14], v[..., 4:12, 12:14]
    # out = 3/4 C + 1/4 y with y the sample: neither thresholded to C nor left to the model as in the hole
    hole = (out[..., 4:12, 4:12] - v[..., 4:12, 4:12]).abs().mean()
    assert 0 < (soft - c).abs().mean() < 0.5 * hole


def test_cinemagraph_and_outpaint_known_exact(n, loaded):
    model, clip = loaded
    img, mask = frames_like(1), torch.zeros(16, 16)
    mask[:, 8:] = 1
    for mode, kw in (("cinemagraph", dict(image=img, mask=mask)),
                     ("outpaint", dict(image=frames_like(8, 8, 8), pad_left=4, pad_right=4, pad_top=4,
                                       pad_bottom=4))):
        pos, neg, latent = condition(n, clip, mode, **kw)
        cond = pos[0][1]["lumiere_cond"]
        C, M = cond[:, :3], cond[:, 3:]
        assert torch.equal(1 - latent["noise_mask"], M)  # binary here: the same as the model's M
        out = sample(n, model, pos, neg, latent)
        assert torch.equal(out * M, C * M), mode


def test_core_ksampler_honours_the_noise_mask(pack, n, loaded):
    """Core KSampler (nodes.common_ksampler) keeps the known pixels to float rounding through the latent's
    noise_mask alone (the exact composite is the Lumiere sampler's)."""
    import nodes as comfy_nodes
    model, clip = loaded
    pos, neg, latent = condition(n, clip, "image_to_video", image=frames_like(1))
    C = pos[0][1]["lumiere_cond"][:, :3]
    out = comfy_nodes.common_ksampler(model, 0, 3, 2.0, "euler", "normal", pos, neg, latent)[0]["samples"]
    assert (out[:, :, 0] - C[:, :, 0]).abs().max() < 1e-4
    plain = dict(latent)
    plain.pop("noise_mask")
    out = comfy_nodes.common_ksampler(model, 0, 3, 2.0, "euler", "normal", pos, neg, plain)[0]["samples"]
    assert (out[:, :, 0] - C[:, :, 0]).abs().max() > 0.05


def ssr(n, frames, denoise, steps=4):
    model, clip = n.loader.LumiereLoader.execute("tiny_ssr.safetensors").args[:2]
    return n.ssr.LumiereSSRUpscale.execute(model, encode(clip, "x"), encode(clip, ""), scale=2, window=4, overlap=2,
                                           fuse="ramped", seed=0, steps=steps, cfg=1.0, sampler_name="ddim",
                                           scheduler="normal", frames=frames, denoise=denoise).args[0]


def test_ssr_denoise_starts_from_the_upsampled_clip(n):
    """denoise < 1 starts from the bilinear up-sampling: a small denoise stays near it, 1 does not."""
    frames = frames_like(8, 8, 8)
    bilinear = n.ssr.upsample_video(n.latent.frames_to_video(frames), 2)
    bilinear = n.latent.video_to_frames(bilinear.clamp(-1, 1))
    light, full = ssr(n, frames, 0.05), ssr(n, frames, 1.0)
    assert light.shape == full.shape == (8, 16, 16, 3)
    assert (light - bilinear).abs().mean() < 0.03
    assert (full - bilinear).abs().mean() > 0.1
    spec = next(i for i in n.ssr.LumiereSSRUpscale.define_schema().inputs if i.id == "denoise")
    assert spec.default == n.ssr.SSR_DENOISE


# ---- the real server -----------------------------------------------------------------------------------------

def still_pixels() -> np.ndarray:
    with Image.open(ROOT / "workflows" / "inputs" / "lumiere_example_still.png") as im:
        return np.array(im.convert("RGB")).astype(int)


def cond_id(prompt: dict) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == "LumiereConditioning")


def test_bundled_image_to_video_ships_with_replacement(api_workflows):
    for name in ("image_to_video", "inpainting", "outpainting", "cinemagraph"):
        p = api_workflows[name]
        assert p[cond_id(p)]["inputs"]["replace_known"] is True, name


@pytest.mark.parametrize("sampler", ["lumiere", "core_ksampler"])
def test_image_to_video_frame0_is_the_input_image(comfy_server, api_workflows, sampler):
    """The bundled image_to_video workflow: frame 0 of the saved (lossless) frames is the input still to within
    uint8 rounding with replace_known on (as shipped), and not with it off; with the Lumiere sampler and with
    core KSampler in its place."""
    still = still_pixels()
    diffs = {}
    for replace in (True, False, None):  # None: a graph saved before the input existed (the default: on)
        p = json.loads(json.dumps(api_workflows["image_to_video"]))
        if replace is None:
            del p[cond_id(p)]["inputs"]["replace_known"]
        else:
            p[cond_id(p)]["inputs"]["replace_known"] = replace
        if sampler == "core_ksampler":
            s = sampler_id(p)
            i = p[s]["inputs"]
            p[s] = {"class_type": "KSampler", "inputs": {
                "model": i["model"], "positive": i["positive"], "negative": i["negative"],
                "latent_image": i["latent"], "seed": i["seed"], "steps": 8, "cfg": i["cfg"], "sampler_name": "ddim",
                "scheduler": "normal", "denoise": 1.0}}
        _, _, frames = run_and_read(comfy_server, p, f"test/i2v_replace_{sampler}_{replace}")
        assert frames.shape[1:3] == still.shape[:2]
        diffs[replace] = np.abs(frames[0].astype(int) - still)
    assert diffs[True].max() <= 1 and diffs[None].max() <= 1, (diffs[True].max(), diffs[None].max())
    assert diffs[False].max() > 8, diffs[False].max()
