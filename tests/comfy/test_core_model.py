"""A Lumiere MODEL is built from core's layer classes (comfy.ops), so core's model machinery acts on it: outputs
equal to the library's on the shipped models, core's low-VRAM partial loading with the same output, weight
patches (LoRA through core's LoRA loader) reaching every layer also when offloaded, fp8 weight storage with
compute casts, and a `cached_patcher_init` that re-creates the model from its file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lumiere.checkpoint import load_model
from lumiere.compute import prepare_for_inference
from lumiere.pipeline import video_net

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "lumiere"
BASE = SHIPPED / "lumiere_demo_base.safetensors"


@pytest.fixture(scope="module")
def n(pack):
    return pack.nodes


def load(n, path=BASE, weight_dtype="fp32"):
    return n.comfy_model.load_model_patcher(str(path), weight_dtype)[0]


def net_inputs(model, frames=8, size=32, seed=1):
    """x (b, 3 + cond, t, h, w), t in (0, 1), text context: what the diffusion_model takes (also a T2I's)."""
    cfg = model.model.lumiere_config
    g = torch.Generator().manual_seed(seed)
    shape = (1, cfg.unet.in_channels, frames, size, size)
    return (torch.randn(shape, generator=g), torch.full((shape[0],), 0.3),
            torch.randn(shape[0], 6, cfg.unet.context_dim, generator=g))


def run(model, inputs):
    with torch.no_grad():
        return model.model.diffusion_model(inputs[0], inputs[1], context=inputs[2])


def layers_with_weights(model):
    return [(name, m) for name, m in model.model.diffusion_model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)]


def test_every_layer_is_a_core_op(n):
    import comfy.ops
    layers = layers_with_weights(load(n))
    assert layers and all(isinstance(m, comfy.ops.CastWeightBiasOp) for _, m in layers), \
        [name for name, m in layers if not isinstance(m, comfy.ops.CastWeightBiasOp)]


@pytest.mark.parametrize("weight_dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.glob("*.safetensors")))
def test_shipped_models_compute_what_the_library_computes(n, name, weight_dtype):
    model = load(n, SHIPPED / name, weight_dtype)
    inputs = net_inputs(model)
    lib = video_net(prepare_for_inference(load_model(SHIPPED / name).model, weight_dtype))
    with torch.no_grad():
        ref = lib(*inputs)
    assert torch.equal(run(model, inputs), ref)


def lora_file(tmp_path, model, seed=0) -> Path:
    """A LoRA in core's key format on layers of every kind: a temporal conv and the temporal /2 (weights read
    directly by the temporal layers), a GroupNorm (read directly by the fp32-statistics norm), a Linear and a
    Conv2d (their own forwards)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    names = ["net.down_blocks.0.0.conv_time", "net.temporal_down.0.conv", "net.down_blocks.0.0.norm_time",
             "net.mid_block.layers.0.attn.to_q", "net.unet.conv_in"]
    weights = dict(model.model.diffusion_model.named_parameters())
    for name in names:
        w = weights[f"{name}.weight"]
        key = f"diffusion_model.{name}"
        if w.ndim == 1:  # norms: a full difference
            sd[f"{key}.diff"] = 0.2 * torch.randn(w.shape, generator=g)
            continue
        rank = 2
        sd[f"{key}.lora_down.weight"] = 0.3 * torch.randn(rank, *w.shape[1:], generator=g)
        sd[f"{key}.lora_up.weight"] = 0.3 * torch.randn(w.shape[0], rank, *([1] * (w.ndim - 2)), generator=g)
    path = tmp_path / "motion_test.safetensors"
    save_file(sd, str(path))
    return path


@pytest.fixture
def lora_name(tmp_path, n):
    import folder_paths
    folder_paths.add_model_folder_path("loras", str(tmp_path))
    return lora_file(tmp_path, load(n)).name


def with_lora(model, name, strength):
    import nodes as core_nodes
    return core_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, strength)[0]


def patched_output(model, inputs, lowvram: bool):
    """The output with core's patches applied: in place (a full load), or on the fly by every layer's
    weight_function when nothing fits (lowvram, forced on CPU by a 1-byte budget)."""
    import comfy.model_management as mm
    device = mm.get_torch_device()
    model.load(device, lowvram_model_memory=1 if lowvram else 0, full_load=not lowvram)
    try:
        if lowvram:
            assert all(m.comfy_cast_weights for _, m in layers_with_weights(model))
        return run(model, inputs)
    finally:
        model.unpatch_model(model.offload_device)


def test_lowvram_partial_loading_gives_the_same_output(n):
    model = load(n)
    inputs = net_inputs(model)
    full = run(model, inputs)
    assert torch.equal(patched_output(model, inputs, lowvram=True), full)
    assert not any(m.comfy_cast_weights for _, m in layers_with_weights(model))  # unpatched again


def test_lora_reaches_every_layer_loaded_or_offloaded(n, lora_name):
    model = load(n)
    inputs = net_inputs(model)
    base = run(model, inputs)
    lora = with_lora(model, lora_name, 1.0)
    full = patched_output(lora, inputs, lowvram=False)
    offloaded = patched_output(lora, inputs, lowvram=True)
    assert (full - base).abs().max() > 1e-2
    torch.testing.assert_close(offloaded, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(run(model, inputs), base)  # the Loader's MODEL is untouched


def test_lora_strength_zero_is_the_original_bit_for_bit(n, lora_name):
    model = load(n)
    inputs = net_inputs(model)
    zero = with_lora(model, lora_name, 0.0)
    assert torch.equal(patched_output(zero, inputs, lowvram=False), run(model, inputs))


@pytest.mark.parametrize("weight_dtype,bits", [("bf16", 16), ("fp8_e4m3fn", 8), ("fp8_e5m2", 8)])
def test_low_precision_weights_compute_with_casts(n, weight_dtype, bits):
    import comfy.model_management as mm
    ref_model = load(n)
    model = load(n, weight_dtype=weight_dtype)
    params = dict(model.model.diffusion_model.named_parameters())
    assert all(p.element_size() * 8 == bits for p in params.values())
    stored = sum(p.numel() * p.element_size() for p in params.values())
    full = sum(p.numel() * p.element_size() for p in ref_model.model.diffusion_model.parameters())
    assert stored == full * bits // 32
    if bits == 8:  # stored in 8 bits, computed in ComfyUI's compute dtype for the device
        assert model.model.manual_cast_dtype == mm.unet_manual_cast(params["net.unet.conv_in.weight"].dtype,
                                                                    mm.get_torch_device(), [torch.bfloat16,
                                                                                            torch.float32])
    inputs = net_inputs(model)
    ref, out = run(ref_model, inputs), run(model, inputs)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < {16: 0.02, 8: 0.25}[bits], rel


def test_cached_patcher_init_recreates_the_model(n):
    model = load(n)
    factory, args = model.cached_patcher_init
    fresh = factory(*args, disable_dynamic=True)
    assert fresh is not model and fresh.model is not model.model
    a, b = model.model.state_dict(), fresh.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fresh.cached_patcher_init == model.cached_patcher_init


def test_core_deepclone_recreates_the_model_from_the_loader(n):
    """Core's device-selection and multi-GPU nodes re-create a model through `deepclone_multigpu` (a core that
    has them); it must give a new model, not the same one passed through."""
    import comfy.model_patcher
    if not hasattr(comfy.model_patcher.ModelPatcher, "deepclone_multigpu"):
        pytest.skip("this ComfyUI has no deepclone_multigpu (device selection / multi-GPU nodes)")
    model = load(n)
    clone = model.deepclone_multigpu()
    assert clone.model is not model.model
    inputs = net_inputs(model)
    assert torch.equal(run(clone, inputs), run(model, inputs))


def test_loads_under_core_dynamic_vram(n, monkeypatch):
    """With core's dynamic VRAM on (default on a GPU with newer cores), core's Linear leaves its weights
    unallocated until core's own loader assigns them; the Loader's layers still load, strictly, the same model."""
    memory_management = pytest.importorskip("comfy.memory_management", reason="this ComfyUI has no dynamic VRAM")
    if not hasattr(memory_management, "aimdo_enabled"):
        pytest.skip("this ComfyUI has no dynamic VRAM")
    ref = load(n)
    monkeypatch.setattr(memory_management, "aimdo_enabled", True)
    model = load(n)
    inputs = net_inputs(model)
    assert torch.equal(run(model, inputs), run(ref, inputs))


def test_attention_goes_through_cores_selection_off_the_cpu(n):
    """Every attention layer of a Loader-built MODEL calls the pack's dispatcher: on a CPU the library's measured
    kernels (bit for bit), elsewhere core's optimized attention (its --use-*-attention flags apply); core's path,
    run here on CPU tensors, computes the same attention, with and without an additive bias."""
    kernels = n.comfy_model.kernels  # the pack's own copy of lumiere.kernels
    attention_layers = [m for m in load(n).model.diffusion_model.modules() if type(m).__name__ == "Attention"]
    assert attention_layers and all(m.attention is n.comfy_model.core_attention for m in attention_layers)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 16, 8, generator=g) for _ in range(3))
    bias = torch.randn(1, 4, 16, 16, generator=g)
    for b in (None, bias):
        ref = kernels.attention_reference(q, k, v, b)
        assert torch.equal(n.comfy_model.core_attention(q, k, v, b), kernels.attention(q, k, v, b))
        torch.testing.assert_close(n.comfy_model.through_core(q, k, v, b), ref, atol=1e-5, rtol=1e-4)
