"""Known-pixel replacement (`lumiere.diffusion.known`, `generate(replace_known=True)`): the known pixels of the
output are C exactly, a soft mask blends, the model is given C noised to the current level with the sampler's
own noise; without replacement the model alone does not keep them."""
import pytest
import torch

from lumiere import conditioning as cond
from lumiere.checkpoint import build_bundle
from lumiere.configs import get_preset
from lumiere.diffusion.known import ReplaceKnown, composite_known
from lumiere.diffusion.samplers import SAMPLERS, get_sigmas, sample, seeded_noise
from lumiere.pipeline import generate


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return build_bundle(get_preset("tiny"))


def clip(t=4, h=16, w=16, seed=0):
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_composite_is_exact_and_blends_soft_masks():
    x, C = clip(seed=1), clip(seed=2)
    M = torch.zeros(1, 1, 4, 16, 16)
    M[..., :8] = 1
    M[..., 8:12] = 0.25
    out = composite_known(x, C, M)
    assert torch.equal(out[..., :8], C[..., :8])  # bit for bit
    assert torch.equal(out[..., 12:], x[..., 12:])
    torch.testing.assert_close(out[..., 8:12], 0.25 * C[..., 8:12] + 0.75 * x[..., 8:12])


def test_wrapper_feeds_noised_known_pixels_and_returns_c_there():
    seen = {}

    def denoiser(x, s):
        seen["x"] = x
        return torch.full_like(x, 0.5)

    C, x = clip(seed=1), clip(seed=3) * 10
    noise = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    M = torch.zeros(1, 1, 4, 16, 16)
    M[:, :, 0] = 1
    M[:, :, 1] = 0.5
    d = ReplaceKnown(denoiser, C, M, noise)(x, torch.tensor(2.0))
    torch.testing.assert_close(seen["x"][:, :, 0], C[:, :, 0] + 2.0 * noise[:, :, 0], rtol=0, atol=0)
    torch.testing.assert_close(seen["x"][:, :, 1], 0.5 * (C[:, :, 1] + 2.0 * noise[:, :, 1]) + 0.5 * x[:, :, 1])
    assert torch.equal(seen["x"][:, :, 2:], x[:, :, 2:])
    assert torch.equal(d[:, :, 0], C[:, :, 0]) and (d[:, :, 2:] == 0.5).all()
    torch.testing.assert_close(d[:, :, 1], 0.5 * C[:, :, 1] + 0.25)
    with pytest.raises(ValueError, match="M"):
        ReplaceKnown(denoiser, C, M * 2, noise)


def test_seeded_noise_is_the_samplers_initial_noise():
    first = []

    def denoiser(x, s):
        first.append(x.clone())
        return torch.zeros_like(x)

    sig = get_sigmas("uniform", 2, 0.002, 160.0)
    sample(denoiser, (1, 3, 2, 8, 8), sig, "euler", seed=11)
    assert torch.equal(first[0], seeded_noise((1, 3, 2, 8, 8), 11) * sig[0])


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_image_to_video_frame0_is_exact_with_replacement_only(bundle, sampler):
    C, M = cond.image_to_video(clip()[:, :, 0], 4)
    kw = dict(num_frames=4, steps=4, cfg=2.0, seed=5, sampler=sampler, C=C, M=M)
    plain = generate(bundle, "a red cat", **kw)
    kept = generate(bundle, "a red cat", replace_known=True, **kw)
    assert torch.equal(kept[:, :, 0], C[:, :, 0])  # bit for bit
    assert (plain[:, :, 0] - C[:, :, 0]).abs().max() > 0.05  # the model alone does not keep it
    assert not torch.equal(kept[:, :, 1:], plain[:, :, 1:])  # the replaced pixels steer the rest
    assert kept[:, :, 1:].std() > 0


def test_inpaint_and_outpaint_known_regions_exact(bundle):
    v = clip()
    known = torch.ones(16, 16)
    known[4:12, 4:12] = 0
    for C, M in (cond.inpaint(v, known), cond.outpaint(v[..., 4:12, 4:12], (4, 4, 4, 4))):
        out = generate(bundle, "a cat", num_frames=4, steps=3, cfg=1.0, seed=1, C=C, M=M, replace_known=True)
        assert torch.equal(out * M, C * M)
        plain = generate(bundle, "a cat", num_frames=4, steps=3, cfg=1.0, seed=1, C=C, M=M)
        assert not torch.equal(plain * M, C * M)


def test_soft_mask_blends(bundle):
    v = clip()
    M = torch.zeros(1, 1, 4, 16, 16)
    M[..., :, :8] = 1
    M[..., :, 8:12] = 0.5  # a feathered edge
    out = generate(bundle, "a cat", num_frames=4, steps=3, cfg=1.0, seed=2, C=v, M=M, replace_known=True)
    assert torch.equal(out[..., :8], v[..., :8])
    soft = out[..., 8:12]
    # out = 0.5 C + 0.5 y with y a sample in -1..1: neither thresholded to C nor left to the model
    assert (soft - 0.5 * v[..., 8:12]).abs().max() <= 0.5 + 1e-6
    assert not torch.equal(soft, v[..., 8:12])
    assert (soft - v[..., 8:12]).abs().max() > 0.01


def test_replace_known_needs_c_and_m(bundle):
    with pytest.raises(ValueError, match="replace_known"):
        generate(bundle, "a cat", num_frames=4, steps=1, replace_known=True)


def test_sdedit_with_replacement(bundle):
    v = clip()
    C, M = cond.image_to_video(v[:, :, 0], 4)
    out = generate(bundle, "a cat", steps=4, cfg=1.0, C=C, M=M, init_video=v, strength=0.5, replace_known=True)
    assert torch.equal(out[:, :, 0], v[:, :, 0])
