"""The sampling-memory estimate (meta device, nothing allocated) against the peak measured on CPU."""
import copy

import torch

from lumiere import build_bundle, get_preset
from lumiere.data.procedural import VOCAB
from lumiere.diffusion.samplers import SAMPLERS, get_sigmas, sample
from lumiere.memory import SAMPLER_COPIES, LiveBytes, forward_peak_bytes, peak_bytes, sampling_memory_estimate
from lumiere.pipeline import generate


def tiny_bundle(t2i: bool = False):
    cfg = get_preset("tiny")
    cfg.text.vocab = VOCAB
    if t2i:
        cfg = copy.deepcopy(cfg)
        cfg.temporal, cfg.role, cfg.conditioning = None, "t2i", "none"
        cfg.unet.in_channels = 3
    torch.manual_seed(0)
    return build_bundle(cfg)


def test_live_bytes_counts_each_storage_once_and_frees():
    with LiveBytes() as m:
        a = torch.empty(1024, device="meta")  # 4 KiB
        v = a.view(32, 32)  # a view: no new storage
        b = torch.empty(2048, device="meta")  # 8 KiB: peak 12 KiB
        del a, v, b
        c = torch.empty(256, device="meta")
    assert m.peak == 12 * 1024 and m.live == 1024 and c.numel() == 256


def test_estimate_matches_the_measured_peak():
    for t2i in (False, True):
        bundle = tiny_bundle(t2i)
        cfg = bundle.config
        for frames, size in ((8, 16), (16, 32)):
            shape = (1, 3, frames, size, size)
            est = sampling_memory_estimate(cfg, shape)
            with torch.no_grad():
                got = peak_bytes(lambda: generate(bundle, "a red circle moving left on black", num_frames=frames,
                                                  height=size, width=size, steps=2, cfg=4.0))
            assert 0.65 * got <= est <= 1.35 * got, (t2i, shape, est, got)
    # 4x the pixels: about 4x the activations, computed in moments with nothing allocated
    small, large = (forward_peak_bytes(tiny_bundle().config, (2, 3, 8, s, s)) for s in (16, 32))
    assert 3 * small <= large <= 5 * small
    huge = sampling_memory_estimate(tiny_bundle().config, (1, 3, 64, 4096, 4096))
    assert huge > 64 * 2 ** 30


def test_block_runner_sees_every_block_and_changes_nothing():
    """STUNet's public seam for measurements: every block (res block + spatial attention + temporal block, and the
    middle) runs through `block_runner`, which here counts them; the output is unchanged, with activation
    checkpointing too."""
    bundle = tiny_bundle()
    model, cfg = bundle.model.eval(), bundle.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.unet.in_channels, 8, 16, 16, generator=g)
    ctx = torch.randn(1, cfg.text.max_tokens, cfg.unet.context_dim, generator=g)
    ref = model(x, torch.tensor([0.5]), ctx)
    calls = []

    def runner(fn, *args):
        calls.append(fn)
        return fn(*args)

    model.block_runner = runner
    levels, n = cfg.unet.num_levels, cfg.unet.num_res_blocks
    for ckpt in (False, True):
        model.activation_checkpointing = ckpt
        calls.clear()
        out = model(x, torch.tensor([0.5]), ctx)
        assert len(calls) == levels * n + 1 + levels * (n + 1)
        assert torch.equal(out, ref)


def test_sampler_copies_is_the_hungriest_samplers_peak():
    """SAMPLER_COPIES (the estimate's latent copies) is what the samplers hold at their peak, measured with a
    denoiser that allocates nothing but its output: no sampler holds more, and the hungriest holds that many
    (scalars such as the sigmas add a few bytes)."""
    shape = (1, 3, 8, 32, 32)
    latent = 3 * 8 * 32 * 32 * 4
    sigmas = get_sigmas("uniform", 5, 0.002, 160.0)
    copies = {name: peak_bytes(lambda: sample(lambda x, s: x / (1 + s * s), shape, sigmas, name, 0)) / latent
              for name in SAMPLERS}
    assert round(max(copies.values())) == SAMPLER_COPIES and max(copies.values()) < SAMPLER_COPIES + 0.01, copies
