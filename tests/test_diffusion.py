"""Schedule identities, the v-loss, the denoiser view, samplers (on analytic denoisers), CFG, SDEdit, seeding."""
import math

import pytest
import torch
from torch import nn

from lumiere.checkpoint import build_bundle
from lumiere.configs import get_preset
from lumiere.diffusion.denoiser import Denoiser
from lumiere.diffusion.samplers import SAMPLERS, get_sampler, get_sigmas, sample, sdedit_sigmas
from lumiere.diffusion.schedule import (add_noise, alpha_sigma, sample_t, t_range, t_to_vesigma, v_loss, v_target,
                                        vesigma_to_t)
from lumiere.pipeline import generate

SAMPLER_NAMES = sorted(SAMPLERS)


def tiny_bundle():
    torch.manual_seed(0)
    return build_bundle(get_preset("tiny"))


# ---------------------------------------------------------------- schedule


def test_schedule_identities():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    a, s = alpha_sigma(t)
    torch.testing.assert_close(a ** 2 + s ** 2, torch.ones_like(t))
    torch.testing.assert_close(vesigma_to_t(t_to_vesigma(t)), t)
    torch.testing.assert_close(t_to_vesigma(t), s / a)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.randn(50, 3, generator=g, dtype=torch.float64)
    x_t, v = add_noise(x0, t, eps), v_target(x0, t, eps)
    a, s = a[:, None], s[:, None]
    torch.testing.assert_close(a * x_t - s * v, x0)  # x0 from v
    torch.testing.assert_close(s * x_t + a * v, eps)  # eps from v
    torch.testing.assert_close(x_t / a, x0 + (s / a) * eps)  # the VE view the samplers use


def test_sample_t_range_and_power():
    lo, hi = t_range(0.002, 160.0)
    g = torch.Generator().manual_seed(0)
    t = sample_t(10000, 0.002, 160.0, generator=g)
    assert lo <= t.min() and t.max() <= hi
    assert sample_t(10000, 0.002, 160.0, generator=g, power=0.5).mean() > t.mean() + 0.1


def test_sigmas():
    for name in ("uniform", "karras"):
        sig = get_sigmas(name, 10, 0.002, 160.0)
        assert len(sig) == 11 and sig[-1] == 0
        assert (sig[:-1].diff() < 0).all()
        assert math.isclose(sig[0].item(), 160.0, rel_tol=1e-5) and math.isclose(sig[-2].item(), 0.002, rel_tol=1e-4)
    with pytest.raises(ValueError, match="scheduler"):
        get_sigmas("linear", 10, 0.002, 160.0)
    with pytest.raises(ValueError, match="steps"):
        get_sigmas("karras", 0, 0.002, 160.0)
    with pytest.raises(ValueError, match="sampler"):
        get_sampler("heun")


# ---------------------------------------------------------------- loss and denoiser


class OracleV(nn.Module):
    """Predicts the exact v for known x0 and noise (plus `bias` outside `mask`)."""

    def __init__(self, x0, noise, bias=0.0, mask=None):
        super().__init__()
        self.x0, self.noise, self.bias, self.mask = x0, noise, bias, mask

    def forward(self, inp, t, context):
        v = v_target(self.x0, t, self.noise)
        return v if self.mask is None else v + self.bias * (1 - self.mask)


def test_v_loss():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 3, 4, 8, 8, generator=g)
    t = torch.tensor([0.2, 0.7])
    ctx = torch.zeros(2, 1, 4)
    assert v_loss(OracleV(x0, noise), x0, t, noise, None, ctx) == 0
    zero = lambda inp, t, ctx: torch.zeros_like(x0)  # noqa: E731
    torch.testing.assert_close(v_loss(zero, x0, t, noise, None, ctx), (v_target(x0, t, noise) ** 2).mean())
    mask = torch.zeros(2, 1, 4, 8, 8)
    mask[:, :, :2] = 1
    wrong_outside = OracleV(x0, noise, bias=5.0, mask=mask)
    assert v_loss(wrong_outside, x0, t, noise, None, ctx, loss_mask=mask) == 0
    torch.testing.assert_close(v_loss(wrong_outside, x0, t, noise, None, ctx), torch.tensor(12.5))
    # the conditioning channels are concatenated to the noisy input
    seen = {}
    v_loss(lambda inp, t, c: seen.setdefault("inp", inp)[:, :3], x0, t, noise, torch.ones(2, 4, 4, 8, 8), ctx)
    assert seen["inp"].shape[1] == 7 and torch.equal(seen["inp"][:, 3:], torch.ones(2, 4, 4, 8, 8))


def test_denoiser_recovers_x0_from_exact_v():
    """The VE view: x = x0 + s eps is fed to the net as alpha x; an exact v gives back x0."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 2, 4, 4, generator=g), torch.randn(2, 3, 2, 4, 4, generator=g)
    for s in (0.01, 1.0, 80.0):
        d = Denoiser(OracleV(x0, eps), torch.zeros(2, 1, 4))
        torch.testing.assert_close(d(x0 + s * eps, torch.tensor(s)), x0, atol=2e-5, rtol=0)


def test_classifier_free_guidance():
    bundle = tiny_bundle()
    te, net = bundle.text_encoder, bundle.model
    ctx, uctx = te.encode("a red cat"), te.encode("")
    cond = torch.zeros(1, 4, 4, 16, 16)
    x, s = 3.0 * torch.randn(1, 3, 4, 16, 16), torch.tensor(3.0)
    with torch.no_grad():
        d_c = Denoiser(net, ctx, cond=cond)(x, s)
        d_u = Denoiser(net, uctx, cond=cond)(x, s)
        for w in (0.0, 1.0, 4.5):
            guided = Denoiser(net, ctx, uctx, cond, cfg_scale=w)(x, s)
            torch.testing.assert_close(guided, d_u + w * (d_c - d_u), atol=1e-5, rtol=0)
        assert torch.equal(Denoiser(net, ctx, uctx, cond, cfg_scale=1.0)(x, s), d_c)  # no uncond pass at 1
    assert (d_c - d_u).abs().max() > 1e-4  # the prompt matters, so the check above has teeth


# ---------------------------------------------------------------- samplers on analytic denoisers


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("scheduler", ["uniform", "karras"])
def test_samplers_land_on_a_single_data_point(name, scheduler):
    """Data = one fixed point: D(x, s) = x* for every s, so every sampler must end exactly there."""
    target = torch.linspace(-1, 1, 12).reshape(3, 4)
    out = sample(lambda x, s: target.clone(), (3, 4), get_sigmas(scheduler, 7, 0.002, 160.0), name, seed=1)
    torch.testing.assert_close(out, target, atol=1e-6, rtol=0)


MU, TAU = 0.3, 0.5


def gaussian_denoiser(x, s):
    """The exact D for data ~ N(MU, TAU^2): E[x0 | x0 + s eps = x]."""
    s = torch.as_tensor(s)
    return MU + TAU ** 2 / (TAU ** 2 + s ** 2) * (x - MU)


@pytest.mark.parametrize("name,tol", [("euler", 0.08), ("ddim", 0.08), ("dpmpp_2m", 0.005)])
def test_ode_samplers_follow_the_exact_flow_of_gaussian_data(name, tol):
    """For Gaussian data the probability-flow ODE is solvable: x(0) = MU + TAU / sqrt(TAU^2 + s0^2) (x(s0) - MU).
    DPM++ 2M is second order, so it is much closer than Euler / DDIM at the same step count."""
    sigmas = get_sigmas("karras", 80, 0.002, 10.0)
    x_init = sigmas[0] * torch.randn(20000, generator=torch.Generator().manual_seed(0))
    exact = MU + TAU / math.sqrt(TAU ** 2 + sigmas[0].item() ** 2) * (x_init - MU)
    out = sample(gaussian_denoiser, (20000,), sigmas, name, seed=0)
    assert (out - exact).abs().max() < tol


def test_ancestral_ddim_samples_the_gaussian():
    sigmas = get_sigmas("uniform", 100, 0.002, 10.0)
    out = sample(gaussian_denoiser, (40000,), sigmas, "ddim", seed=0, eta=1.0)
    assert abs(out.mean().item() - MU) < 0.01
    assert abs(out.std().item() - TAU) < 0.03


# ---------------------------------------------------------------- SDEdit and seeding


def test_sdedit_sigmas():
    sig = get_sigmas("uniform", 20, 0.002, 160.0)
    assert torch.equal(sdedit_sigmas(sig, 1.0), sig)
    half = sdedit_sigmas(sig, 0.5)
    assert len(half) == 11 and torch.equal(half, sig[10:])
    assert len(sdedit_sigmas(sig, 0.01)) == 2  # at least one step
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strength"):
            sdedit_sigmas(sig, bad)


def test_sdedit_strength_controls_distance_to_input():
    bundle = tiny_bundle()
    video = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    kw = dict(steps=25, cfg=1.0, seed=3, init_video=video)
    light = generate(bundle, "a cat", strength=0.04, **kw)
    strong = generate(bundle, "a cat", strength=1.0, **kw)
    assert light.shape == video.shape
    assert (light - video).abs().mean() < 0.02
    assert (strong - video).abs().mean() > 0.2


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_same_seed_is_bitwise_identical(name):
    bundle = tiny_bundle()
    kw = dict(num_frames=4, steps=3, cfg=3.0, sampler=name)
    a = generate(bundle, "a red cat", seed=7, **kw)
    b = generate(bundle, "a red cat", seed=7, **kw)
    c = generate(bundle, "a red cat", seed=8, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ancestral_noise_comes_from_the_seed():
    bundle = tiny_bundle()
    d = Denoiser(bundle.model, bundle.text_encoder.encode("cat"), cond=torch.zeros(1, 4, 2, 16, 16))
    sig = get_sigmas("uniform", 3, 0.002, 160.0)
    a, b, c = (sample(d, (1, 3, 2, 16, 16), sig, "ddim", seed=s, eta=1.0) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
