"""Node-level tests inside an in-process ComfyUI: each node's outputs and validation errors (which name the
input), and that the ComfyUI glue computes exactly what the library does."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def n(pack):
    """The pack's node modules."""
    return pack.nodes


@pytest.fixture(scope="module")
def loaded(n):
    model, clip, frames, width, height, fps, info = n.loader.LumiereLoader.execute("tiny_base.safetensors").args
    return model, clip, frames, width, height, fps


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def frames_like(t=8, h=16, w=16, seed=0):
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(seed))


# ---- loader -------------------------------------------------------------------------------------------------

def test_loader_outputs(n, loaded):
    import comfy.model_patcher
    model, clip, frames, width, height, fps = loaded
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert (frames, width, height, fps) == (8, 16, 16, 8.0)
    assert n.loader.LumiereLoader.define_schema().node_id in [c.define_schema().node_id for c in n.NODE_CLASSES]


def test_loader_info_and_unknown_word_warning(n, loaded, caplog):
    info = n.loader.LumiereLoader.execute("tiny_base.safetensors").args[6]
    assert "base checkpoint" in info and "16x16 px, 8 frames" in info and "vocabulary:" in info
    import copy
    config = copy.deepcopy(loaded[0].model.lumiere_config)  # what a trained checkpoint's notes say it knows
    assert "knows" not in info and n.loader.trained_on(config) == ""  # the tiny models were never trained
    config.notes = {"data": {"kind": "procedural", "camera": 0.0}}
    assert n.loader.trained_on(config) == "; knows flat coloured shapes moving on plain backgrounds (the pack's " \
                                          "procedural clips)"
    config.notes = {"data": {"kind": "real", "camera": 0.5}}
    assert n.loader.trained_on(config) == ("; knows real footage and photos (camera-captioned: 'a video', "
                                           "'a photo'), camera pans and zooms over still images")
    import logging
    with caplog.at_level(logging.WARNING):
        encode(loaded[1], "a red zebra galloping")
    assert "'galloping'" in caplog.text and "'zebra'" in caplog.text and "'red'" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        encode(loaded[1], "a red circle")
    assert "Lumiere CLIP" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # other scripts, accents, emoji and words past the length: said once each
        encode(loaded[1], "一只红色的圆 🎈 (café:1.2) a red a red a red a red")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Lumiere CLIP: ")]
    assert lines == ["Lumiere CLIP: text: the text encoder reads a-z and 0-9 only; it drops '一只红色的圆🎈é' "
                     "(reads 'caf a red a red a red a red')",
                     "Lumiere CLIP: text: the text encoder does not know 'caf' (they encode as 'unknown'); it knows: "
                     + " ".join(loaded[1].tokenizer.words.vocab[3:]),
                     "Lumiere CLIP: text: 9 words, the text encoder reads the first 7; dropped: 'a red'"]


def test_user_model_folder_is_created_and_listed(pack):
    import os

    import folder_paths
    user = os.path.join(folder_paths.models_dir, "lumiere")
    assert os.path.isdir(user) and user in folder_paths.get_folder_paths("lumiere")


def test_loader_missing_and_bad_files(n, pack):
    with pytest.raises(FileNotFoundError, match="ckpt_name"):
        n.loader.LumiereLoader.execute("nope.safetensors")
    bad = pack.models_dir / "bad.safetensors"
    bad.write_bytes(b"garbage!")
    with pytest.raises(ValueError, match="bad.safetensors"):
        n.loader.LumiereLoader.execute("bad.safetensors")


def test_loader_weight_dtype_bf16_is_close_to_fp32(n, loaded):
    """The Loader's precision choice: bf16 weights in channels_last, the same clip to within bf16 rounding."""
    fp32 = n.loader.LumiereLoader.execute("tiny_base.safetensors", "fp32").args[0]
    bf16 = n.loader.LumiereLoader.execute("tiny_base.safetensors", "bf16").args[0]
    net = n.comfy_model.lumiere_net(bf16)
    assert net.unet.conv_in.weight.dtype == torch.bfloat16
    assert net.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    latent = {"samples": torch.zeros(1, 3, 8, 16, 16)}
    a = sample(n, (fp32, loaded[1]), latent)["samples"]
    b = sample(n, (bf16, loaded[1]), latent)["samples"]
    assert b.dtype == torch.float32 and (a - b).norm() / a.norm() < 0.05
    with pytest.raises(ValueError, match="weight_dtype"):
        n.loader.LumiereLoader.execute("tiny_base.safetensors", "fp16")


def test_clip_matches_library_text_encoder(pack, loaded):
    """Core CLIPTextEncode on the CLIP gives exactly the library encoder's context; the empty prompt gives the
    library's unconditional context; prompt weights move the weighted token only."""
    clip = loaded[1]
    te = pack.lumiere.load_model(pack.models_dir / "tiny_base.safetensors").text_encoder
    for text in ("a red circle moving right on gray", "", "an unknown word"):
        cond = encode(clip, text)
        assert cond[0][1]["pooled_output"] is None
        torch.testing.assert_close(cond[0][0], te.encode(text), rtol=0, atol=0)
    plain, weighted = encode(clip, "a red circle")[0][0], encode(clip, "a (red:1.5) circle")[0][0]
    changed = (plain - weighted).abs().amax(-1)[0] > 0
    assert changed.tolist()[:4] == [False, True, False, False]


# ---- latents ------------------------------------------------------------------------------------------------

def test_empty_video_and_frame_conversions(n):
    latent = n.latent.LumiereEmptyVideo.execute(8, 16, 24, 2).args[0]
    assert latent["samples"].shape == (2, 3, 8, 24, 16) and latent["samples"].abs().sum() == 0
    frames = frames_like()
    latent = n.latent.LumiereFramesToLatent.execute(frames).args[0]
    assert latent["samples"].shape == (1, 3, 8, 16, 16)
    assert latent["samples"].min() >= -1 and latent["samples"].max() <= 1
    back = n.latent.LumiereLatentToFrames.execute(latent).args[0]
    torch.testing.assert_close(back, frames)
    with pytest.raises(ValueError, match="frames"):
        n.latent.LumiereFramesToLatent.execute(torch.rand(16, 16, 3))
    with pytest.raises(ValueError, match="latent"):
        n.latent.LumiereLatentToFrames.execute({"samples": torch.zeros(1, 4, 8, 8)})


# ---- sampler ------------------------------------------------------------------------------------------------

def sample(n, loaded, latent, **kw):
    model, clip = loaded[:2]
    args = dict(seed=0, steps=2, cfg=2.0, sampler_name="ddim", scheduler="normal", denoise=1.0)
    args.update(kw)
    return n.sampler.LumiereSampler.execute(model, encode(clip, "a red circle"), encode(clip, ""), latent,
                                            **args).args[0]


def test_sampler_runs_and_is_deterministic(n, loaded):
    latent = {"samples": torch.zeros(1, 3, 8, 16, 16)}
    a, b = sample(n, loaded, latent), sample(n, loaded, latent)
    assert a["samples"].shape == (1, 3, 8, 16, 16) and a["samples"].std() > 0
    torch.testing.assert_close(a["samples"], b["samples"], rtol=0, atol=0)


@pytest.mark.parametrize("shape,words", [((1, 3, 7, 16, 16), ["latent:", "multiple of 2 frames", "got 7"]),
                                         ((1, 3, 8, 15, 16), ["latent:", "multiples of 2", "got 16x15"]),
                                         ((1, 4, 8, 16), ["latent", "[B, 3, T, H, W]"])])
def test_sampler_rejects_bad_latents(n, loaded, shape, words):
    with pytest.raises(ValueError) as e:
        sample(n, loaded, {"samples": torch.zeros(shape)})
    for w in words:
        assert w in str(e.value)


def test_search_aliases_cover_what_users_type(n):
    """Every node has aliases in the one table, the words the issue names find the right node, and the schema
    carries them where this ComfyUI takes them (0.3.75 does not: there they are left out)."""
    table = n.search.SEARCH_ALIASES
    schemas = [cls.define_schema() for cls in n.NODE_CLASSES]
    assert set(table) == {s.node_id for s in schemas}
    owner = {alias: node for node, words in table.items() for alias in words}
    assert owner["image to video"] == owner["inpaint video"] == owner["cinemagraph"] == "LumiereConditioning"
    assert owner["video upscale"] == "LumiereSSRUpscale" and owner["prompt travel"] in table
    for schema in schemas:
        if n.search.SCHEMA_TAKES_ALIASES:
            assert schema.search_aliases == list(table[schema.node_id])
        else:
            assert not hasattr(schema, "search_aliases")


def test_work_that_cannot_fit_is_refused_before_it_is_allocated(n, loaded):
    """Estimated from the shapes (lumiere.memory) against the memory ComfyUI reports free; the inputs here are
    broadcast views, so nothing large exists even for the moment of the call."""
    import resource
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    big = torch.zeros(1, 3, 1, 1, 1).expand(1, 3, 16, 8192, 8192)
    with pytest.raises(ValueError, match=r"latent: expected a video whose sampling fits the .* free on .*, got "
                                         r"\[1, 3, 16, 8192, 8192\] needing about .* GiB; fit the video"):
        sample(n, loaded, {"samples": big})
    with pytest.raises(ValueError, match=r"width/height/frames: expected a video that fits the .* free"):
        n.latent.LumiereEmptyVideo.execute(4096, 8192, 8192, 64)
    image = torch.zeros(1, 1, 1, 3).expand(1, 16384, 16384, 3)
    with pytest.raises(ValueError, match=r"image: expected a video that fits .*; fit it to the model"):
        condition(n, loaded, "image_to_video", image=image, frames=64)
    # the checks themselves allocate nothing the size of these videos (a 4-byte copy of `big` is 12.9 GB)
    with pytest.raises(ValueError, match="latent: expected finite values"):
        n.latent.check_finite(torch.full((1, 3, 1, 1, 1), float("nan")).expand(1, 3, 16, 8192, 8192), "latent")
    assert n.latent.check_finite(big, "latent") is big
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 2 * 2 ** 20
    assert sample(n, loaded, {"samples": torch.zeros(1, 3, 8, 16, 16)})["samples"].shape == (1, 3, 8, 16, 16)


def test_sampler_rejects_other_models(n, loaded):
    clone = loaded[0].clone()
    clone.model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="model: expected a MODEL from the Lumiere loader"):
        sample(n, (clone, loaded[1]), {"samples": torch.zeros(1, 3, 8, 16, 16)})


def test_samplers_refuse_an_ssr_model_by_name(n):
    """An SSR checkpoint would otherwise sample text-to-video from a zero low-res input, without a word."""
    model, clip = n.loader.LumiereLoader.execute("tiny_ssr.safetensors").args[:2]
    latent = {"samples": torch.zeros(1, 3, 8, 16, 16)}
    message = r"^model: expected a base Lumiere model \(text/image-to-video\), got an SSR checkpoint \(role 'ssr'\)"
    with pytest.raises(ValueError, match=message):
        sample(n, (model, clip), latent)
    with pytest.raises(ValueError, match=message):
        long_sample(n, (model, clip), latent)


def test_ssr_on_a_clip_shorter_than_the_window_names_the_clip(n):
    with pytest.raises(ValueError, match=r"^frames: expected a positive multiple of 2 frames .*got 1$"):
        ssr(n, frames_like(1, 8, 8), window=4)
    with pytest.raises(ValueError, match=r"^latent: expected a positive multiple of 2 frames .*got 1$"):
        ssr(n, latent={"samples": torch.zeros(1, 3, 1, 8, 8)}, window=4)


def test_comfy_model_is_the_library_denoiser(pack, loaded):
    """ComfyUI's ModelSamplingContinuousV + our BaseModel give the library's x0 = D(x, sigma) exactly."""
    import comfy.model_management
    model, clip = loaded[:2]
    comfy.model_management.load_models_gpu([model])
    bundle = pack.lumiere.load_model(pack.models_dir / "tiny_base.safetensors")
    from lumiere_pack_under_test.lumiere.diffusion.denoiser import Denoiser
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 8, 16, 16, generator=g) * 3
    cond = torch.cat([torch.rand(1, 3, 8, 16, 16, generator=g), torch.ones(1, 1, 8, 16, 16)], 1)
    ctx = encode(clip, "a red circle")[0][0]
    for sigma in (0.01, 1.0, 50.0):
        s = torch.tensor([sigma])
        ours = model.model.apply_model(x, s, c_concat=cond, c_crossattn=ctx)
        ref = Denoiser(bundle.model, ctx, cond=cond)(x, s)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


# ---- conditioning -------------------------------------------------------------------------------------------

def cond_of(result):
    positive, negative, latent = result.args
    c = positive[0][1]["lumiere_cond"]
    assert torch.equal(c, negative[0][1]["lumiere_cond"])
    assert latent["samples"].shape == (c.shape[0], 3, *c.shape[2:])
    return c[:, :3], c[:, 3:]


def condition(n, loaded, mode, **kw):
    clip = loaded[1]
    args = dict(frames=8, image=None, mask=None, pad_left=0, pad_right=0, pad_top=0, pad_bottom=0, width=0, height=0)
    args.update(kw)
    return n.conditioning.LumiereConditioning.execute(encode(clip, "x"), encode(clip, ""), mode, **args)


def test_conditioning_modes(n, loaded):
    img = frames_like(1)
    C, M = cond_of(condition(n, loaded, "image_to_video", image=img))
    assert C.shape == (1, 3, 8, 16, 16) and M[:, :, 0].min() == 1 and M[:, :, 1:].max() == 0
    torch.testing.assert_close(C[0, :, 0], img[0].permute(2, 0, 1) * 2 - 1)

    video, mask = frames_like(8), torch.zeros(16, 16)
    mask[4:12, 4:12] = 1  # generate the centre
    C, M = cond_of(condition(n, loaded, "inpaint", image=video, mask=mask))
    assert M[0, 0, :, 8, 8].max() == 0 and M[0, 0, :, 0, 0].min() == 1 and C[0, :, :, 8, 8].abs().max() == 0

    C, M = cond_of(condition(n, loaded, "outpaint", image=video, pad_left=4, pad_right=4, pad_top=8, pad_bottom=0))
    assert C.shape == (1, 3, 8, 24, 24) and M[0, 0, 0, :8].max() == 0 and M[0, 0, 0, 8:, 4:20].min() == 1

    C, M = cond_of(condition(n, loaded, "cinemagraph", image=img, mask=mask))
    assert M[:, :, 0].min() == 1 and M[0, 0, 1:, 8, 8].max() == 0 and M[0, 0, 1:, 0, 0].min() == 1

    C, M = cond_of(condition(n, loaded, "direct", image=video, mask=mask))
    assert M[0, 0, :, 8, 8].max() == 0 and M[0, 0, :, 0, 0].min() == 1


def test_fitting_downscales_antialiased(n, loaded):
    """A one-pixel checkerboard fitted 4x smaller is its average, flat grey (bilinear would alias it to stripes or
    a colour); a mask likewise. Growing stays smooth (bilinear)."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2).float()
    image = checker[None, :, :, None].expand(1, 32, 32, 3)
    C, M = cond_of(condition(n, loaded, "cinemagraph", image=image, mask=checker, width=8, height=8))
    torch.testing.assert_close(C[0, :, 0], torch.zeros(3, 8, 8))  # 0.5 grey in [-1, 1]
    torch.testing.assert_close(n.conditioning.fit_inputs(image, checker, "cinemagraph", 8, 8, 8)[1],
                               torch.full((8, 8), 0.5))
    ramp = torch.linspace(0, 1, 8)[None, None, :, None].expand(1, 8, 8, 3)
    grown = n.conditioning.fit_inputs(ramp, None, "image_to_video", 8, 16, 8)[0]
    assert grown.shape == (1, 8, 16, 3) and (grown[0, 0, 1:, 0] - grown[0, 0, :-1, 0]).min() > 0


@pytest.mark.parametrize("mode,kw,name", [
    ("inpaint", dict(mask=torch.zeros(12, 16)), "mask"),  # wrong size
    ("inpaint", dict(mask=torch.zeros(3, 16, 16)), "mask"),  # 3 masks for 8 frames
    ("inpaint", dict(mask=None), "mask"),
    ("cinemagraph", dict(mask=torch.zeros(1, 8, 8)), "mask"),
    ("outpaint", dict(), "pad_left"),
    ("image_to_video", dict(image=None), "image"),
    ("inpaint", dict(image=frames_like(1), mask=torch.zeros(16, 16)),  # a 1-frame video into an 8-frame task
     r"^image: expected a video of at least 8 frames for inpaint \(the frames input\), got 1"),
    ("direct", dict(image=frames_like(4), mask=torch.zeros(16, 16)), r"^image: expected a video of at least 8"),
])
def test_conditioning_errors_name_the_input(n, loaded, mode, kw, name):
    kw = {"image": frames_like(8), **kw}
    with pytest.raises(ValueError, match=name):
        condition(n, loaded, mode, **kw)


def test_conditioning_frames_mismatch_is_caught_by_the_model(n, loaded):
    positive, negative, _ = condition(n, loaded, "image_to_video", image=frames_like(1)).args
    model = loaded[0]
    with pytest.raises(ValueError, match="conditioning was built for 8 frames"):
        n.sampler.LumiereSampler.execute(model, positive, negative, {"samples": torch.zeros(1, 3, 4, 16, 16)}, 0, 1,
                                         1.0, "ddim", "normal", 1.0)


# ---- SSR ------------------------------------------------------------------------------------------------------

def ssr(n, frames=None, window=4, overlap=2, fuse="ramped", name="tiny_ssr.safetensors", scale=2, latent=None,
        output=0):
    model, clip = n.loader.LumiereLoader.execute(name).args[:2]
    return n.ssr.LumiereSSRUpscale.execute(model, encode(clip, "x"), encode(clip, ""), scale=scale, window=window,
                                           overlap=overlap, fuse=fuse, seed=0, steps=2, cfg=1.0, sampler_name="ddim",
                                           scheduler="normal", frames=frames, latent=latent).args[output]


def test_ssr_keeps_the_videos_of_a_latent_apart(n):
    """Two videos in one latent are upscaled apart: the second's result does not depend on the first (its windows
    never straddle the two), unlike the same frames merged into one IMAGE batch."""
    a, b, c = (frames_like(8, 8, 8, seed=s).permute(3, 0, 1, 2)[None] * 2 - 1 for s in (1, 2, 3))
    ab = ssr(n, latent={"samples": torch.cat([a, b])}, output=1)["samples"]
    cb = ssr(n, latent={"samples": torch.cat([c, b])}, output=1)["samples"]
    assert ab.shape == (2, 3, 8, 16, 16)
    torch.testing.assert_close(ab[1], cb[1], rtol=1e-4, atol=1e-4)
    merged = ssr(n, frames=torch.cat([(v[0].permute(1, 2, 3, 0) + 1) / 2 for v in (a, b)]))
    assert merged.shape == (16, 16, 16, 3)
    with pytest.raises(ValueError, match="frames/latent"):
        ssr(n)


def test_ssr_upscales_over_windows(n):
    out = ssr(n, frames_like(10, 8, 8))
    assert out.shape == (10, 16, 16, 3) and 0 <= out.min() and out.max() <= 1


def test_ssr_one_window_is_the_plain_denoiser(pack, n):
    """With one window covering the clip, the MultiDiffusion wrapper returns exactly the plain model output."""
    model = n.loader.LumiereLoader.execute("tiny_ssr.safetensors").args[0]
    wrapper = n.ssr.multidiffusion_wrapper(8, 2, "flat")
    x, cond = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 8, 8, 8)
    args = {"input": x, "timestep": torch.tensor([2.0, 2.0]), "cond_or_uncond": [0, 1],
            "c": {"c_concat": cond, "c_crossattn": torch.randn(2, 8, 32), "transformer_options": {}}}
    apply = model.model.apply_model
    ref = apply(x, args["timestep"], c_concat=cond, c_crossattn=args["c"]["c_crossattn"], transformer_options={})
    torch.testing.assert_close(wrapper(apply, args), ref, rtol=0, atol=0)


@pytest.mark.parametrize("kw,name", [(dict(overlap=4, window=4), "overlap"), (dict(window=3), "window"),
                                     (dict(name="tiny_base.safetensors"), "model")])
def test_ssr_errors_name_the_input(n, kw, name):
    with pytest.raises(ValueError, match=name):
        ssr(n, frames_like(10, 8, 8), **kw)


# ---- stylize --------------------------------------------------------------------------------------------------

def patched_weights(model):
    """The model's weights with its patches applied (as sampling would see them)."""
    import comfy.model_management
    comfy.model_management.load_models_gpu([model])
    return {k: v.clone() for k, v in model.model.diffusion_model.net.state_dict().items()}


def test_stylize_interpolates_t2i_weights_only(pack, n, loaded):
    model = loaded[0]
    orig = patched_weights(model)
    style = pack.lumiere.load_model(pack.models_dir / "tiny_style.safetensors").model.state_dict()
    for alpha in (0.0, 0.5, 1.0):
        w = patched_weights(n.stylize.LumiereStylize.execute(model, "tiny_style.safetensors", alpha).args[0])
        for k, v in w.items():
            if k.startswith("unet."):
                expected = orig[k] * (1 - alpha) + style[k[len("unet."):]] * alpha
                torch.testing.assert_close(v, expected, rtol=0, atol=1e-6)
            else:
                assert torch.equal(v, orig[k]), k  # temporal layers untouched
    assert all(torch.equal(v, orig[k]) for k, v in patched_weights(model).items())  # the original is back


def test_stylize_errors(n, loaded):
    with pytest.raises(ValueError, match="alpha"):
        n.stylize.LumiereStylize.execute(loaded[0], "tiny_style.safetensors", 1.5)
    with pytest.raises(Exception, match="style weights"):
        n.stylize.LumiereStylize.execute(loaded[0], "tiny_ssr.safetensors", 0.5)  # conv_in has 6 channels


def test_preview_reshape_mosaics_videos_and_passes_frames_through(n):
    fmt = n.comfy_model.LumiereVideoFormat()
    video = torch.rand(2, 3, 5, 4, 6)
    mosaic = fmt.latent_rgb_factors_reshape(video)
    assert mosaic.shape == (1, 3, 2 * 4, 3 * 6)  # 5 frames in a 3-column grid of the first video
    torch.testing.assert_close(mosaic[0, :, :4, 6:12], video[0, :, 1])
    frames = torch.rand(5, 3, 4, 6)  # a previewer that already split the video into frames
    assert fmt.latent_rgb_factors_reshape(frames) is frames


def test_text_width_mismatch_names_the_conditioning(n, loaded):
    latent = {"samples": torch.zeros(1, 3, 8, 16, 16)}
    wrong = [[torch.zeros(1, 77, 768), {"pooled_output": None}]]  # e.g. from an SD1.5 CLIP
    with pytest.raises(ValueError, match=r"positive/negative: .* 768 wide, but this Lumiere model takes 32"):
        n.sampler.LumiereSampler.execute(loaded[0], wrong, wrong, latent, seed=0, steps=1, cfg=1.0,
                                         sampler_name="ddim", scheduler="normal", denoise=1.0)


# ---- keyframes, extend, long videos, loops, prompt travel ------------------------------------------------------

def test_conditioning_keyframes_and_extend(n, loaded):
    images = frames_like(2)
    C, M = cond_of(condition(n, loaded, "keyframes", image=images, indices="0, -1"))
    assert M[0, 0, :, 0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    torch.testing.assert_close(C[0, :, 7], images[1].permute(2, 0, 1) * 2 - 1)
    C, M = cond_of(condition(n, loaded, "extend", image=frames_like(3), frames=16))
    assert C.shape[2] == 16 and M[0, 0, :, 0, 0].tolist() == [1] * 3 + [0] * 13
    for kw, name in ((dict(indices="0, 3, 5"), "indices"), (dict(indices="first"), "indices")):
        with pytest.raises(ValueError, match=name):
            condition(n, loaded, "keyframes", image=images, **kw)
    with pytest.raises(ValueError, match="clip"):
        condition(n, loaded, "extend", image=frames_like(8), frames=8)


def long_sample(n, loaded, latent, positive=None, **kw):
    model, clip = loaded[:2]
    args = dict(seed=0, steps=2, cfg=2.0, sampler_name="ddim", scheduler="normal", window=0, overlap=0,
                fuse="ramped", loop=False)
    args.update(kw)
    positive = encode(clip, "a red circle") if positive is None else positive
    return n.long_video.LumiereLongSampler.execute(model, positive, encode(clip, ""), latent, **args).args[0]


def test_long_sampler_one_window_is_the_plain_sampler(n, loaded):
    latent = {"samples": torch.zeros(1, 3, 8, 16, 16)}
    torch.testing.assert_close(long_sample(n, loaded, latent)["samples"], sample(n, loaded, latent)["samples"],
                               rtol=0, atol=0)


def test_long_sampler_any_length_keeps_known_frames_and_loops(n, loaded):
    clip_frames = frames_like(4)
    positive, negative, latent = condition(n, loaded, "extend", image=clip_frames, frames=24).args
    out = long_sample(n, loaded, latent, positive=positive, window=8, overlap=4)["samples"]
    assert out.shape == (1, 3, 24, 16, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out[0, :, :4], clip_frames.permute(3, 0, 1, 2) * 2 - 1)  # the clip, exactly
    plain = {"samples": torch.zeros(1, 3, 8, 16, 16)}
    looped = long_sample(n, loaded, plain, loop=True)["samples"]
    assert torch.isfinite(looped).all() and not torch.equal(looped, long_sample(n, loaded, plain)["samples"])


def test_windows_take_their_segment_and_fuse_as_the_library(n, pack):
    """The core handler's windows, weights and prompt choice are the library's MultiDiffusion: a fake model call
    returning each entry's constant gives the same clip as MultiDiffusionDenoiser with `choose`."""
    from lumiere_pack_under_test.lumiere.multidiffusion import MultiDiffusionDenoiser
    from lumiere_pack_under_test.lumiere.pipeline import segment_at
    key = n.comfy_model.SEGMENT_KEY
    conds = [[{key: 0, "value": 0.0}, {key: 12, "value": 1.0}, {"value": 10.0}], [{"value": 5.0}]]

    def calc(model, sub_conds, x, timestep, options):
        return [torch.full_like(x, sum(c["value"] for c in cs)) for cs in sub_conds]

    x = torch.zeros(1, 3, 24, 2, 2)
    for loop in (False, True):
        handler = n.long_video.LumiereWindows(8, 4, "ramped", loop)
        pos, neg = handler.execute(calc, None, conds, x, torch.tensor([1.0]), {"transformer_options": {}})
        const = [lambda x, s, cond=None, v=v: torch.full_like(x, v) for v in (10.0, 11.0)]
        schedule = [(0, "a"), (12, "b")]
        ref = MultiDiffusionDenoiser(const[0], 8, 4, "ramped", loop=loop,
                                     choose=lambda f: const[segment_at(schedule, f[(len(f) - 1) // 2])])(x, 1.0)
        torch.testing.assert_close(pos, ref)
        torch.testing.assert_close(neg, torch.full_like(x, 5.0))


def test_prompt_schedule_node(n, loaded):
    clip = loaded[1]
    (cond,) = n.long_video.LumierePromptSchedule.execute(clip, "0: a red circle\n8: a blue circle").args
    key = n.comfy_model.SEGMENT_KEY
    assert [c[1][key] for c in cond] == [0, 8]
    torch.testing.assert_close(cond[1][0], encode(clip, "a blue circle")[0][0])
    latent = {"samples": torch.zeros(1, 3, 16, 16, 16)}
    travel = long_sample(n, loaded, latent, positive=cond, window=8, overlap=4)["samples"]
    single = long_sample(n, loaded, latent, window=8, overlap=4)["samples"]
    assert not torch.equal(travel, single)
    with pytest.raises(ValueError, match="Long Video Sampler"):
        n.sampler.LumiereSampler.execute(loaded[0], cond, encode(clip, ""), latent, 0, 1, 1.0, "ddim", "normal", 1.0)
    with pytest.raises(ValueError, match="prompt schedule"):
        n.long_video.LumierePromptSchedule.execute(clip, "4: a red circle")
    (late,) = n.long_video.LumierePromptSchedule.execute(clip, "0: a red circle\n8: a blue circle\n16: a cat").args
    with pytest.raises(ValueError, match=r"^positive: expected prompt-schedule segments starting within the "
                                         r"latent's 16 frames \(0-15\), got start frame\(s\) \[16\]"):
        long_sample(n, loaded, latent, positive=late, window=8, overlap=4)


@pytest.mark.parametrize("kw,name", [(dict(window=8, overlap=8), "overlap"), (dict(window=3), "window")])
def test_long_sampler_errors_name_the_input(n, loaded, kw, name):
    with pytest.raises(ValueError, match=name):
        long_sample(n, loaded, {"samples": torch.zeros(1, 3, 16, 16, 16)}, **kw)


def test_conditioning_fits_a_users_media_to_the_model(n, loaded):
    """A large, long clip and its mask are resized to width x height and cut to `frames`."""
    video, mask = frames_like(40, 48, 64), torch.zeros(40, 48, 64)
    mask[:, 12:36, 16:48] = 1
    C, M = cond_of(condition(n, loaded, "inpaint", image=video, mask=mask, frames=8, width=16, height=16))
    assert C.shape == (1, 3, 8, 16, 16) and M.shape == (1, 1, 8, 16, 16)
    assert M[0, 0, :, 8, 8].max() == 0 and M[0, 0, :, 0, 0].min() == 1
    C, _ = cond_of(condition(n, loaded, "image_to_video", image=frames_like(1, 40, 80), width=16, height=16))
    assert C.shape == (1, 3, 8, 16, 16)
    with pytest.raises(ValueError, match="width/height"):
        condition(n, loaded, "image_to_video", image=frames_like(1), width=16, height=0)


def test_cancel_stops_the_long_sampler_between_windows(n):
    """Cancel (ComfyUI's interrupt) raises before the next window: no further model calls."""
    import comfy.model_management as mm
    calls = []

    def calc(model, sub_conds, x, timestep, options):
        calls.append(x.shape[2])
        mm.interrupt_current_processing(True)  # the user presses Cancel during the first window
        return [torch.zeros_like(x) for _ in sub_conds]

    handler = n.long_video.LumiereWindows(8, 4, "ramped", False)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            handler.execute(calc, None, [[{}], [{}]], torch.zeros(1, 3, 32, 2, 2), torch.tensor([1.0]),
                            {"transformer_options": {}})
    finally:
        mm.interrupt_current_processing(False)
    assert calls == [8]  # 7 windows cover the clip; only the first ran


# ---- one proven sampling path: the library and the nodes give the same clip ------------------------------------

def test_library_and_node_sampling_agree(pack, n, loaded):
    """Library `generate` (ddim, uniform in t) and the Lumiere Sampler node (core ddim, normal) draw the same noise
    and step the same ODE: the same clip up to float error (the library clamps its output to -1..1, the sampler's
    latent is clamped where it becomes frames), for text-to-video and with <C, M>; the SSR node and library
    `upscale` over MultiDiffusion windows too."""
    from lumiere_pack_under_test.lumiere import conditioning
    from lumiere_pack_under_test.lumiere.pipeline import generate, upscale
    bundle = pack.lumiere.load_model(pack.models_dir / "tiny_base.safetensors")
    kw = dict(steps=4, cfg=2.0, seed=3)
    lib = generate(bundle, "a red circle", num_frames=8, sampler="ddim", scheduler="uniform", **kw)
    node = sample(n, loaded, {"samples": torch.zeros(1, 3, 8, 16, 16)}, **kw)["samples"].clamp(-1, 1)
    torch.testing.assert_close(node, lib, rtol=0, atol=2e-3)  # measured: 5e-5

    image = frames_like(1)
    positive, negative, latent = condition(n, loaded, "image_to_video", image=image, replace_known=False).args
    node = n.sampler.LumiereSampler.execute(loaded[0], positive, negative, latent, 3, 4, 2.0, "ddim", "normal",
                                            1.0).args[0]["samples"].clamp(-1, 1)
    # the node's positive was encoded from "x" (see `condition`)
    C, M = conditioning.image_to_video(image[0].permute(2, 0, 1)[None] * 2 - 1, 8)
    lib = generate(bundle, "x", num_frames=8, C=C, M=M, sampler="ddim", scheduler="uniform", **kw)
    torch.testing.assert_close(node, lib, rtol=0, atol=2e-3)

    ssr_bundle = pack.lumiere.load_model(pack.models_dir / "tiny_ssr.safetensors")
    low = frames_like(10, 8, 8)
    ssr_model, ssr_clip = n.loader.LumiereLoader.execute("tiny_ssr.safetensors").args[:2]
    node = n.ssr.LumiereSSRUpscale.execute(ssr_model, encode(ssr_clip, "x"), encode(ssr_clip, ""), scale=2, window=4,
                                           overlap=2, fuse="ramped", seed=3, steps=4, cfg=1.0, sampler_name="ddim",
                                           scheduler="normal", frames=low, denoise=1.0).args[1]["samples"]
    lib = upscale(ssr_bundle, low.permute(3, 0, 1, 2)[None] * 2 - 1, "x", window=4, overlap=2, fuse="ramped",
                  steps=4, cfg=1.0, seed=3, denoise=1.0)
    torch.testing.assert_close(node, lib, rtol=0, atol=2e-3)


def test_previews_follow_the_users_preview_method(n, loaded):
    """The sampler's previews are core's: none with --preview-method none, else one per step showing every frame
    in one grid (Latent2RGB through the latent format's mosaic)."""
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append(preview))
    before = args.preview_method
    try:
        for method in (LatentPreviewMethod.NoPreviews, LatentPreviewMethod.Latent2RGB):
            args.preview_method = method
            seen.clear()
            sample(n, loaded, {"samples": torch.zeros(1, 3, 8, 16, 16)}, steps=3)
            assert 1 <= len(seen) <= 3  # core's progress hook: every step on 0.3.75, fewer calls on 0.33.0
            if method == LatentPreviewMethod.NoPreviews:
                assert all(p is None for p in seen)
            else:
                kind, image, _ = seen[-1]
                assert kind == "JPEG" and image.size == (3 * 16, 3 * 16)  # 8 frames in a 3 x 3 grid
    finally:
        args.preview_method = before
        comfy.utils.set_progress_bar_global_hook(None)


def test_sampling_to_nan_is_refused(n, loaded):
    """A model that returns NaN (e.g. an fp16 overflow) stops with an error naming the model, not a black video."""
    model = loaded[0].clone()
    model.set_model_unet_function_wrapper(lambda apply, args: apply(args["input"], args["timestep"], **args["c"])
                                          * float("nan"))
    with pytest.raises(ValueError, match="model: sampling produced NaN"):
        n.sampler.LumiereSampler.execute(model, encode(loaded[1], "a red circle"), encode(loaded[1], ""),
                                         {"samples": torch.zeros(1, 3, 8, 16, 16)}, 0, 2, 1.0, "ddim", "normal", 1.0)


def test_non_finite_input_is_refused_naming_it(n, loaded):
    """NaN / inf in a user's frames, image, mask or latent stops with an error that names the input (it used to
    come out as a black clip reported as a success)."""
    bad = frames_like(8)
    bad[3, 2, 2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"frames: expected finite values, got 1 NaN or infinite value\(s\)"):
        n.latent.LumiereFramesToLatent.execute(bad)
    with pytest.raises(ValueError, match="image: expected finite values"):
        condition(n, loaded, "image_to_video", image=bad[:1].clone().fill_(float("inf")))
    mask = torch.zeros(16, 16)
    mask[0, 0] = float("nan")
    with pytest.raises(ValueError, match="mask: expected finite values"):
        condition(n, loaded, "inpaint", image=frames_like(8), mask=mask)
    latent = torch.zeros(1, 3, 8, 16, 16)
    latent[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="latent: expected finite values"):
        sample(n, loaded, {"samples": latent})
    with pytest.raises(ValueError, match="latent: expected finite values"):
        n.long_video.LumiereLongSampler.execute(loaded[0], encode(loaded[1], "x"), encode(loaded[1], ""),
                                                {"samples": latent}, 0, 2, 2.0, "ddim", "normal")
    with pytest.raises(ValueError, match="frames: expected finite values"):
        ssr(n, bad[:, :8, :8])
