"""The fast paths of issue 'STUNet faster than per-frame T2I' compute what the plain formulations compute:
temporal convs on frame-shifted views vs Conv1d along each pixel's frames, channels_last vs NCHW, matmul
attention vs SDPA, a bf16 network vs fp32, shared vs repeated text context."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from lumiere.checkpoint import build_model
from lumiere.configs import get_preset
from lumiere import kernels
from lumiere.kernels import attention, temporal_conv_reference, temporal_upsample_reference, use_matmul_attention
from lumiere.models.layers import Attention
from lumiere.models.temporal import (AttentionInflationBlock, ConvInflationBlock, TemporalDownsample,
                                     TemporalUpsample)
from lumiere.compute import prepare_for_inference, to_compute_layout


def conv_along_frames(conv, h, frames):
    """The reference: Conv1d (replicate padding) over each pixel's frames.  ((b t), c, H, W) -> same"""
    return temporal_conv_reference(h, conv.weight, conv.bias, frames)


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("t", [1, 2, 8])
def test_temporal_resampling_equals_conv1d_reference(kernel, channels_last, t):
    """Values and gradients (input, weight, bias) of the conv2d-over-a-view resamplers equal Conv1d along each
    pixel's frames with replicate padding, also when the kernel is longer than the clip."""
    b, c, H, W = 2, 6, 5, 4
    h = torch.randn(b * t, c, H, W)
    if channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    down = randomize(TemporalDownsample(c, kernel), 1)
    up = randomize(TemporalUpsample(c, kernel), 2)
    cases = [(down, lambda x: rearrange(rearrange(conv_along_frames(down.conv, x, t), "(b t) c H W -> b t c H W",
                                                  t=t)[:, ::2], "b t c H W -> (b t) c H W"))] if t % 2 == 0 else []
    cases.append((up, lambda x: temporal_upsample_reference(x, up.conv.weight, up.conv.bias, t)))
    for module, reference in cases:
        grads = []
        for fn in (lambda x: module(x, t), reference):
            x = h.clone().requires_grad_()
            module.zero_grad()
            y = fn(x)
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            grads.append((y.detach(), x.grad, module.conv.weight.grad.clone(), module.conv.bias.grad.clone()))
        for ours, ref in zip(*grads):
            torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
        if channels_last:
            assert grads[0][0].is_contiguous(memory_format=torch.channels_last)


def test_conv_inflation_block_equals_conv1d_reference():
    b, t, c, H = 2, 4, 8, 6
    block = randomize(ConvInflationBlock(c, emb_dim=5), 3)
    h, emb = torch.randn(b * t, c, H, H), torch.randn(b, 5)
    y = block.conv_space(F.silu(block.norm(h)))
    scale, shift = block.film(F.silu(emb)).repeat_interleave(t, 0)[:, :, None, None].chunk(2, dim=1)
    y = F.silu(block.norm_time(y) * (1 + scale) + shift)
    ref = h + block.proj_out(F.silu(conv_along_frames(block.conv_time, y, t)))
    assert torch.allclose(block(h, emb, None, t), ref, atol=1e-5)


def test_even_temporal_kernel_is_a_named_error():
    with pytest.raises(ValueError, match="conv_kernel"):
        TemporalDownsample(4, kernel=2)


def test_shared_context_equals_repeated_context():
    att = randomize(Attention(16, 8, context_dim=6), 4)
    x, ctx = torch.randn(12, 5, 16), torch.randn(3, 7, 6)  # 4 rows per sample
    assert torch.allclose(att(x, ctx), att(x, ctx.repeat_interleave(4, dim=0)), atol=1e-6)
    with pytest.raises(ValueError, match="context"):
        att(x, torch.randn(5, 7, 6))


def test_temporal_mode_attention_block_projects_context_once():
    block = randomize(AttentionInflationBlock(16, 8, 6, layers=1, head_dim=8, mode="temporal"), 5)
    calls = []
    block.layers[0].cross_attn.to_kv.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    block(torch.randn(2 * 4, 16, 3, 3), torch.randn(2, 8), torch.randn(2, 7, 6), frames=4)
    assert calls == [2]  # once per sample, not once per pixel (18)


def test_matmul_attention_equals_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 16, generator=g) for _ in range(3))
    bias = torch.zeros(2, 1, 1, 64).masked_fill(torch.rand(2, 1, 1, 64, generator=g) < 0.3, float("-inf"))
    qb, kb, vb = (a.bfloat16().requires_grad_() for a in (q, k, v))
    assert use_matmul_attention(qb, kb)  # bf16 with gradients, 64 x 64 scores: on every CPU
    out = attention(qb, kb, vb, bias.bfloat16())
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert (out.float() - ref).abs().max() < 0.05
    out.float().sum().backward()
    assert qb.grad is not None and torch.isfinite(qb.grad).all()


@pytest.mark.parametrize("kind", ["amx", "other"])
def test_attention_kernel_is_chosen_as_documented(kind, monkeypatch):
    """The rules written in lumiere.kernels, for both kinds of CPU (this machine is one of them)."""
    monkeypatch.setattr(kernels, "cpu_kind", lambda: kind)

    def qk(l, m, dtype=torch.bfloat16, grad=False):
        return (torch.zeros(1, 1, l, 16, dtype=dtype, requires_grad=grad),
                torch.zeros(1, 1, m, 16, dtype=dtype, requires_grad=grad))
    assert not use_matmul_attention(*qk(64, 64, torch.float32, grad=True))  # fp32: SDPA everywhere
    assert not use_matmul_attention(*qk(8, 8, torch.float32))
    assert use_matmul_attention(*qk(256, 256, grad=True))
    assert use_matmul_attention(*qk(512, 512, grad=True)) == (kind == "other")
    with torch.no_grad():
        assert use_matmul_attention(*qk(16, 64))
        assert use_matmul_attention(*qk(64, 64)) == (kind == "other")
        assert use_matmul_attention(*qk(1280, 1280)) == (kind == "other")
    assert not use_matmul_attention(*qk(4096, 4096, grad=True))  # long sequences never build the score matrix
    with torch.no_grad():
        assert not use_matmul_attention(*qk(4096, 4096))


class Calls(torch.overrides.TorchFunctionMode):
    """The torch functions called inside, with their arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("grad", [False, True])
def test_off_the_cpu_the_kernels_are_torchs_own(grad):
    """Every CPU rule sits behind a CPU device check: on another device (meta here, the code path of CUDA and MPS)
    GroupNorm gets torch's kernel on the bf16 channels_last activations as they come (no fp32 or NCHW copy), its
    FiLM is not folded and attention is SDPA, where the CPU takes its measured paths for the same inputs."""
    seen = {}
    for device in ("cpu", "meta"):
        x = torch.ones(4, 32, 8, 8, device=device, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        w, b, scale = (torch.ones(32, device=device, requires_grad=grad) for _ in range(3))
        q = torch.ones(1, 2, 64, 16, device=device, dtype=torch.bfloat16, requires_grad=grad)
        with Calls() as mode:
            kernels.group_norm(x, 8, w, b, 1e-5)
            kernels.group_norm_film(x, 8, w, b, 1e-5, scale[:, None, None], scale[:, None, None])
            kernels.attention(q, q, q)
        seen[device] = mode.calls
        norms = [args[0] for func, args in mode.calls if func is F.group_norm]
        funcs = {func for func, _ in mode.calls}
        if device == "meta":
            assert norms and all(a is x for a in norms)
            assert torch.addcmul not in funcs and F.scaled_dot_product_attention in funcs
        else:  # 8 x 8 frames: an fp32 copy without autograd, NCHW with it; a fold without autograd; matmul attention
            assert norms and all(a is not x for a in norms)
            assert (torch.addcmul in funcs) == (not grad)
            assert (F.scaled_dot_product_attention in funcs) == (not grad and not use_matmul_attention(q, q))


def test_attention_reference_is_sdpa():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g) for _ in range(3))
    bias = torch.randn(2, 1, 10, 10, generator=g)
    torch.testing.assert_close(kernels.attention_reference(q, k, v, bias),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-5, rtol=1e-5)


def tiny_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 7, 8, 16, 16, generator=g), torch.rand(2, generator=g), torch.randn(2, 8, 32, generator=g)


def test_channels_last_changes_no_output():
    model = randomize(build_model(get_preset("tiny")), 6).eval()
    x, t, ctx = tiny_inputs()
    with torch.no_grad():
        ref = model(x, t, ctx)
        to_compute_layout(model)
        assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x, t, ctx)
    assert torch.allclose(out, ref, atol=1e-4)


def test_bf16_network_keeps_the_callers_dtype_and_is_close():
    model = randomize(build_model(get_preset("tiny")), 7).eval()
    x, t, ctx = tiny_inputs(1)
    with torch.no_grad():
        ref = model(x, t, ctx)
        prepare_for_inference(model, "bf16")
        assert model.unet.conv_in.weight.dtype == torch.bfloat16
        out = model(x, t, ctx)
    assert out.dtype == torch.float32
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.05, rel
    with pytest.raises(ValueError, match="precision"):
        prepare_for_inference(model, "fp8")


def test_activation_checkpointing_same_gradients_less_memory():
    from lumiere.memory import peak_bytes
    model = randomize(build_model(get_preset("tiny")), 8)
    x, t, ctx = tiny_inputs(2)
    x = torch.cat([x] * 2, dim=2)  # 16 frames: activations dominate
    grads, peaks = [], []
    for on in (False, True):
        model.zero_grad()
        model.activation_checkpointing = on
        peaks.append(peak_bytes(lambda: model(x, t, ctx).square().mean().backward()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6)
    assert peaks[1] < 0.8 * peaks[0], peaks


@pytest.mark.parametrize("size", [16, 32])  # both sides of HALF_CHANNELS_LAST_GROUP_NORM_MIN_PIXELS
def test_group_norm_in_bf16_equals_fp32_statistics_and_keeps_layout(size):
    """bf16 activations (channels_last too) normalise to the fp32 computation rounded to bf16, gradients close to
    fp32's, and the output keeps the input's memory layout."""
    from lumiere.models.layers import group_norm
    torch.manual_seed(0)
    norm = group_norm(32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x32 = (torch.randn(4, 32, size, size) * 0.5 + 3.0).contiguous(memory_format=torch.channels_last)
    x16 = x32.bfloat16().requires_grad_()
    y = norm(x16)
    ref = torch.nn.functional.group_norm(x16.detach().float(), norm.num_groups, norm.weight.detach().bfloat16().float(),
                                         norm.bias.detach().bfloat16().float(), norm.eps)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert (y.float() - ref).abs().max() <= ref.abs().max() * 2 ** -7  # within one bf16 rounding
    y.float().pow(2).sum().backward()
    xf = x16.detach().float().requires_grad_()
    torch.nn.functional.group_norm(xf, norm.num_groups, norm.weight.detach(), norm.bias.detach(),
                                   norm.eps).pow(2).sum().backward()
    torch.testing.assert_close(x16.grad.float(), xf.grad, rtol=0.05, atol=0.05 * float(xf.grad.abs().max()))
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32


def test_training_memory_estimate_matches_a_measured_step():
    """The meta-device estimate of a training step's activations (bench `train_memory`, how the paper preset's
    80 x 128^2 figure is made) is within 25 % of the measured peak on the demo preset, with and without activation
    checkpointing, and checkpointing lowers it."""
    from lumiere.memory import peak_bytes, training_memory_estimate
    from lumiere.checkpoint import build_model
    from lumiere.configs import get_preset
    est = training_memory_estimate("demo", 16, 32)
    assert est["activations_checkpointed_gib"] < 0.6 * est["activations_gib"]
    cfg = get_preset("demo")
    torch.manual_seed(0)
    x = torch.randn(1, cfg.unet.in_channels, 16, 32, 32, dtype=torch.bfloat16)
    ctx = torch.randn(1, cfg.text.max_tokens, cfg.unet.context_dim, dtype=torch.bfloat16)
    for ckpt, key in ((False, "activations_gib"), (True, "activations_checkpointed_gib")):
        model = build_model(cfg).to(torch.bfloat16)
        model.unet.requires_grad_(False)
        model.activation_checkpointing = ckpt

        def step():
            model(x, torch.tensor([0.5]), ctx).float().pow(2).mean().backward()

        step()
        measured = peak_bytes(step) / 2 ** 30
        assert 0.75 < est[key] / measured < 1.25, (ckpt, est[key], measured)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_film_folded_at_inference_equals_the_three_steps(dtype):
    """norm.film (one folded affine pass without autograd) == norm(x) * (1 + scale) + shift computed in fp32, for
    per-sample scale / shift, in both layouts; with autograd it is the composed form (same values, recorded)."""
    from lumiere.models.layers import group_norm
    g = torch.Generator().manual_seed(3)
    norm = randomize(group_norm(32), 9)
    x = torch.randn(6, 32, 8, 8, generator=g) * 2 + 1
    scale, shift = torch.randn(6, 32, 1, 1, generator=g), torch.randn(6, 32, 1, 1, generator=g)
    ref = F.group_norm(x, norm.num_groups, norm.weight.detach(), norm.bias.detach(), norm.eps) * (1 + scale) + shift
    tol = 1e-5 if dtype == torch.float32 else 3 * 2 ** -8 * float(ref.abs().max())
    for layout in (torch.contiguous_format, torch.channels_last):
        xd = x.to(dtype).contiguous(memory_format=layout)
        with torch.no_grad():
            y = norm.film(xd, scale.to(dtype), shift.to(dtype))
        assert y.dtype == dtype and y.is_contiguous(memory_format=layout)
        assert (y.float() - ref).abs().max() <= tol
        y = norm.film(xd, scale.to(dtype), shift.to(dtype))  # with autograd: the three steps
        assert y.requires_grad and (y.float() - ref).abs().max() <= tol


@pytest.mark.parametrize("size", [8, 32])  # both sides of HALF_CHANNELS_LAST_GROUP_NORM_MIN_PIXELS
def test_group_norm_in_bf16_without_autograd_equals_fp32_statistics(size):
    from lumiere.models.layers import group_norm
    norm = randomize(group_norm(64), 10)
    x = (torch.randn(4, 64, size, size) * 0.5 + 3.0).contiguous(memory_format=torch.channels_last).bfloat16()
    with torch.no_grad():
        y = norm(x)
    ref = F.group_norm(x.float(), norm.num_groups, norm.weight.detach().bfloat16().float(),
                       norm.bias.detach().bfloat16().float(), norm.eps)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert (y.float() - ref).abs().max() <= ref.abs().max() * 2 ** -7  # within one bf16 rounding


FAULTS_SCRIPT = """
import resource, sys, torch
from lumiere.compute import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("no-glibc")
    raise SystemExit
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # a forward's pattern: big activations of a few sizes (40 and 80 MB), allocated and freed in turn
    x = torch.ones(40, 64, 64, 64)
    for _ in range(3):
        z = torch.cat([x, x * 2], dim=1)
        x = z[:, :64] + z[:, 64:]
counts = []
for _ in range(8):
    before = faults()
    step()
    counts.append(faults() - before)
print(" ".join(map(str, counts)))
"""


def test_keep_freed_memory_reuses_freed_blocks_without_page_faults():
    """Repeated steps of big allocations: by default glibc returns the blocks and every step faults their pages in
    again (~130 k faults of 4 KB); the project's processes (keep_freed_memory) reach a step without faults. Page
    faults counted with getrusage in fresh processes, not timed."""
    import subprocess
    import sys
    counts = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True)
        if out.stdout.strip() == "no-glibc":
            pytest.skip("not glibc: keep_freed_memory has no effect")
        counts[mode] = [int(v) for v in out.stdout.split()]
    assert counts["default"][-1] > 50_000, counts  # 40 MB = 10 k pages, several blocks a step
    assert min(counts["keep"][-3:]) < counts["default"][-1] / 50, counts
