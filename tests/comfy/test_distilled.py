"""Distilled few-step models in ComfyUI (issue 20): the checkpoint's recorded sampling (`ModelConfig.sampling`) is
read by the Loader (its info) and the Lumiere Sampler (model_defaults), and core KSampler runs the model on the
grid it was trained on: core's 'sgm_uniform' on Lumiere's model sampling is the library's 'trailing' grid, so core
KSampler (ddim, sgm_uniform, the recorded steps, cfg 1) gives the library's clip, one network call per step."""
from __future__ import annotations

import pytest
import torch

STEPS = 4
TINY_4STEP = "tiny_base_4step.safetensors"


@pytest.fixture(scope="module")
def n(pack):
    return pack.nodes


@pytest.fixture(scope="module")
def distilled(pack):
    """The tiny base with a distilled model's sampling record (the weights do not matter for the plumbing)."""
    from lumiere_pack_under_test.lumiere.diffusion.samplers import trailing_sigmas
    path = pack.models_dir / TINY_4STEP
    if not path.exists():
        bundle = pack.lumiere.load_model(pack.models_dir / "tiny_base.safetensors")
        c = bundle.config
        bundle.config.sampling = {"steps": STEPS, "cfg": 1.0, "sampler": "ddim", "scheduler": "trailing",
                                  "sigmas": trailing_sigmas(STEPS, c.sigma_min, c.sigma_max).tolist(),
                                  "distilled": {"teacher_steps": 32, "teacher_cfg": 4.0}}
        pack.lumiere.save_model(path, bundle)
    return TINY_4STEP


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_core_sgm_uniform_is_the_trailing_grid(n, distilled, steps):
    import comfy.samplers
    from lumiere_pack_under_test.lumiere.diffusion.samplers import trailing_sigmas, uniform_sigmas
    model = n.loader.LumiereLoader.execute(distilled).args[0]
    ms = model.get_model_object("model_sampling")
    c = model.model.lumiere_config
    core = comfy.samplers.calculate_sigmas(ms, "sgm_uniform", steps)
    torch.testing.assert_close(core, trailing_sigmas(steps, c.sigma_min, c.sigma_max), rtol=2e-5, atol=1e-6)
    core = comfy.samplers.calculate_sigmas(ms, "normal", steps)
    torch.testing.assert_close(core, uniform_sigmas(steps, c.sigma_min, c.sigma_max), rtol=2e-5, atol=1e-6)


def test_loader_and_core_names_of_the_recorded_sampling(n, distilled):
    info = n.loader.LumiereLoader.execute(distilled).args[6]
    assert f"sample it at {STEPS} steps, cfg 1, sampler ddim, scheduler sgm_uniform" in info, info
    assert "distilled" in info
    teacher = n.loader.LumiereLoader.execute("tiny_base.safetensors")
    assert "sample it at 25 steps, cfg 4, sampler ddim, scheduler normal" in teacher.args[6]
    assert n.sampler.core_sampling(teacher.args[0].model.lumiere_config) == {
        "steps": 25, "cfg": 4.0, "sampler_name": "ddim", "scheduler": "normal"}


def test_core_ksampler_runs_the_distilled_model_as_the_library(pack, n, distilled):
    """Core KSampler at the recorded settings = library `generate` at the model's defaults (float error), in
    STEPS network calls (cfg 1: no unconditional pass); the Lumiere Sampler with model_defaults ignores its
    widgets and gives the same clip."""
    import nodes as core_nodes
    from lumiere_pack_under_test.lumiere.pipeline import generate
    model, clip = n.loader.LumiereLoader.execute(distilled).args[:2]
    pos, neg = encode(clip, "a red circle"), encode(clip, "")
    latent = {"samples": torch.zeros(1, 3, 8, 16, 16)}
    calls = []
    net = model.model.diffusion_model
    handle = net.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        core = core_nodes.common_ksampler(model, 3, STEPS, 1.0, "ddim", "sgm_uniform", pos, neg, latent)[0]
    finally:
        handle.remove()
    assert sum(calls) == STEPS
    bundle = pack.lumiere.load_model(pack.models_dir / distilled)
    lib = generate(bundle, "a red circle", num_frames=8, seed=3)  # the model's defaults: 4 trailing, cfg 1
    torch.testing.assert_close(core["samples"].clamp(-1, 1), lib, rtol=0, atol=2e-3)
    node = n.sampler.LumiereSampler.execute(model, pos, neg, latent, 3, 25, 4.0, "euler", "normal", 1.0,
                                            model_defaults=True).args[0]["samples"]
    torch.testing.assert_close(node.clamp(-1, 1), lib, rtol=0, atol=2e-3)


def test_ssr_upscale_at_the_model_defaults_of_a_distilled_ssr(pack, n):
    """Lumiere SSR Upscale with model_defaults ignores its steps / cfg / sampler / scheduler / denoise widgets and
    runs the SSR's recorded grid (2 trailing steps from pure noise): the library's `upscale` at the model's
    defaults, in 2 calls per window."""
    from lumiere_pack_under_test.lumiere.diffusion.samplers import trailing_sigmas
    from lumiere_pack_under_test.lumiere.pipeline import upscale
    path = pack.models_dir / "tiny_ssr_2step.safetensors"
    if not path.exists():
        bundle = pack.lumiere.load_model(pack.models_dir / "tiny_ssr.safetensors")
        c = bundle.config
        c.sampling = {"steps": 2, "cfg": 1.0, "sampler": "ddim", "scheduler": "trailing", "denoise": 1.0,
                      "sigmas": trailing_sigmas(2, c.sigma_min, c.sigma_max).tolist(),
                      "distilled": {"teacher_steps": 2, "teacher_cfg": 1.0}}
        pack.lumiere.save_model(path, bundle)
    model, clip = n.loader.LumiereLoader.execute(path.name).args[:2]
    low = torch.rand(4, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    calls = []
    handle = model.model.diffusion_model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        node = n.ssr.LumiereSSRUpscale.execute(model, encode(clip, "x"), encode(clip, ""), scale=2, window=4,
                                               overlap=2, fuse="ramped", seed=3, steps=17, cfg=3.0,
                                               sampler_name="euler", scheduler="karras", frames=low, denoise=0.3,
                                               model_defaults=True).args[1]["samples"]
    finally:
        handle.remove()
    assert sum(calls) == 2  # one window, 2 steps, cfg 1
    lib = upscale(pack.lumiere.load_model(path), low.permute(3, 0, 1, 2)[None] * 2 - 1, "x", window=4, overlap=2,
                  fuse="ramped", seed=3)
    torch.testing.assert_close(node, lib, rtol=0, atol=2e-3)
