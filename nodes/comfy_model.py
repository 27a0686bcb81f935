"""ComfyUI glue for Lumiere checkpoints: the MODEL and CLIP objects core nodes expect.

A Lumiere network predicts v with the continuous cosine schedule, which is exactly ComfyUI's
ModelSamplingContinuousV (t = atan(sigma) * 2 / pi), so core KSampler / SamplerCustomAdvanced drive it unchanged.
Pixel space: the LATENT is the video itself, [B, 3, T, H, W] in -1..1 (identity LatentFormat).
Lumiere's extra input channels (<C, M> or the up-sampled low-res video) travel in CONDITIONING under
COND_KEY and reach the net through `concat_cond`.
"""
from __future__ import annotations

import functools
import logging
import math

import torch

import comfy.latent_formats
import comfy.ldm.modules.attention as comfy_attention
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.supported_models_base
import comfy.utils
from comfy.sd1_clip import ClipTokenWeightEncoder, escape_important, token_weights, unescape_important

from ..lumiere import kernels
from ..lumiere.checkpoint import build_model, load_state, load_state_into
from ..lumiere.compute import PRECISIONS, to_compute_layout
from ..lumiere.configs import ModelConfig
from ..lumiere.memory import format_bytes, sampling_memory_estimate
from ..lumiere.models.ops import Ops
from ..lumiere.models.stunet import STUNet
from ..lumiere.models.unet2d import check_spatial_size
from ..lumiere.models.text import END, PAD, UNK, TextEncoder, WordTokenizer, split_words
from ..lumiere.pipeline import video_net

COND_KEY = "lumiere_cond"  # CONDITIONING key: the extra channels (b, k, t, h, w) concatenated after x
SEGMENT_KEY = "lumiere_start_frame"  # CONDITIONING key: the first frame of a prompt-schedule segment


def clip_mosaic(x: torch.Tensor) -> torch.Tensor:
    """All frames of the first video in one grid, so previews show the whole clip.  # (b, c, t, h, w) -> (1, c, H, W)

    Anything else passes through unchanged: previewers that already split videos into frames (e.g.
    VideoHelperSuite's animated previews) hand over 4-D (frames, c, h, w)."""
    if x.ndim != 5:
        return x
    v = x[0]
    c, t, h, w = v.shape
    cols = math.ceil(math.sqrt(t))
    rows = math.ceil(t / cols)
    v = torch.cat([v, v.new_zeros(c, rows * cols - t, h, w)], dim=1) if rows * cols > t else v
    return v.reshape(c, rows, cols, h, w).permute(0, 1, 3, 2, 4).reshape(1, c, rows * h, cols * w)


class LumiereVideoFormat(comfy.latent_formats.LatentFormat):
    """Pixel-space video: 3 channels, 3 dims, identity scaling; core latent previews show the whole clip."""

    latent_channels = 3
    latent_dimensions = 3
    scale_factor = 1.0

    def __init__(self):
        self.latent_rgb_factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        self.latent_rgb_factors_bias = None
        self.latent_rgb_factors_reshape = clip_mosaic

    def process_in(self, latent):
        return latent

    def process_out(self, latent):
        return latent


def comfy_weights(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A comfy.ops layer's weight and bias as its own forward applies them to `x`: cast to x's dtype and device
    with core's weight patches (LoRA, low-VRAM) when the layer casts or has patches, else as stored."""
    if layer.comfy_cast_weights or layer.weight_function or layer.bias_function:
        return comfy.ops.cast_bias_weight(layer, x)
    return layer.weight, layer.bias


@functools.cache
def eager_linear(linear: type) -> type:
    """Core's Linear with its weights allocated when built and loaded by torch's own state-dict loading (the
    Loader's strict, named checks need them): under core's dynamic VRAM, core's Linear otherwise leaves them
    unallocated until core's own loader assigns them."""
    return type(linear.__name__, (linear,), {"_load_from_state_dict": torch.nn.Module._load_from_state_dict})


def core_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Attention through core's selection on a GPU (so its flags apply: --use-sage-attention, --use-flash-attention,
    --use-split-cross-attention, ...); on a CPU the library's measured choice (`lumiere.kernels.attention`).
    (n, heads, tokens, head_dim) -> the same"""
    if q.device.type == "cpu":
        return kernels.attention(q, k, v, bias)
    return through_core(q, k, v, bias)


def through_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Core's optimized attention (its masked variant with an additive bias).  (n, h, l, d) -> (n, h, l, d)"""
    n, h, l, d = q.shape
    attend = comfy_attention.optimized_attention if bias is None else comfy_attention.optimized_attention_masked
    out = attend(q, k, v, heads=h, mask=bias, skip_reshape=True)  # (n, l, h d): every core kernel returns this
    return out.reshape(n, l, h, d).transpose(1, 2)


def lumiere_ops(operations) -> Ops:
    """The library's layer classes from core's `operations` (the comfy.ops class core picked for the weight and
    compute dtypes; disable_weight_init when None)."""
    operations = operations or comfy.ops.disable_weight_init
    return Ops(Linear=eager_linear(operations.Linear), Conv1d=operations.Conv1d, Conv2d=operations.Conv2d,
               GroupNorm=operations.GroupNorm, LayerNorm=operations.LayerNorm, weights=comfy_weights,
               attention=core_attention)


class LumiereNet(torch.nn.Module):
    """The library network as ComfyUI's `diffusion_model`: forward(x, t in (0, 1), context) -> v.

    Built from core's `operations` (comfy.ops layers: weight casts, patches and offloading act on it)."""

    def __init__(self, lumiere_config: dict, dtype=None, device=None, operations=None, **kwargs):
        super().__init__()
        self.config = ModelConfig.from_dict(lumiere_config)
        # STUNet or UNet2D, in the library's compute layout (channels_last: lumiere.compute)
        net = build_model(self.config, lumiere_ops(operations)).to(device=device, dtype=dtype)
        self.net = to_compute_layout(net)
        self.dtype = dtype or torch.float32

    def forward(self, x, timesteps, context=None, control=None, transformer_options={}, **kwargs):
        width = self.config.unet.context_dim
        if context is None:  # e.g. a core sampler given conditioning without text
            context = x.new_zeros(x.shape[0], 1, width)
        if context.shape[-1] != width:
            raise ValueError(f"positive/negative: the conditioning's text embeddings are {context.shape[-1]} wide, "
                             f"but this Lumiere model takes {width}-wide text; encode the prompts with the CLIP "
                             f"output of the Lumiere Loader (or the text encoder this checkpoint was trained with)")
        return video_net(self.net)(x, timesteps, context.to(x.dtype))


class LumiereComfyConfig(comfy.supported_models_base.BASE):
    unet_config = {}
    unet_extra_config = {}  # BASE's default injects SD kwargs
    latent_format = LumiereVideoFormat
    memory_usage_factor = 0.05  # pixel space, small nets (ChromaRadiance uses 0.038); calibrate on GPU
    # no fp16: pixel-space v-prediction overflows it
    supported_inference_dtypes = [torch.bfloat16, torch.float32]

    def __init__(self, lumiere: ModelConfig):
        super().__init__({"lumiere_config": lumiere.to_dict()})
        self.lumiere = lumiere
        self.sampling_settings = {"sigma_min": lumiere.sigma_min, "sigma_max": lumiere.sigma_max, "sigma_data": 1.0}

    def get_model(self, state_dict=None, prefix="", device=None):
        return LumiereModel(self, device=device)  # never BASE.get_model: it builds an SD UNet


class LumiereModel(comfy.model_base.BaseModel):
    def __init__(self, model_config: LumiereComfyConfig, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.V_PREDICTION_CONTINUOUS, device=device,
                         unet_model=LumiereNet)
        # weights stored in one dtype, computed in another (core's manual cast, e.g. fp8 weights)
        net = self.diffusion_model.net
        (net.unet if isinstance(net, STUNet) else net).compute_dtype = self.manual_cast_dtype

    @property
    def lumiere_config(self) -> ModelConfig:
        return self.model_config.lumiere

    def concat_cond(self, **kwargs):
        """The extra input channels: <C, M> (4) for base models, the up-sampled video (3) for SSR; zeros if unset."""
        k = self.lumiere_config.cond_channels
        if k == 0:
            return None
        noise, device = kwargs["noise"], kwargs["device"]
        cond = kwargs.get(COND_KEY)
        if cond is None:
            return torch.zeros(noise.shape[0], k, *noise.shape[2:], device=device, dtype=noise.dtype)
        if cond.shape[1] != k or cond.shape[2:] != noise.shape[2:]:
            t, h, w = noise.shape[2:]
            raise ValueError(f"positive/negative: the conditioning was built for {cond.shape[2]} frames of "
                             f"{cond.shape[4]}x{cond.shape[3]} with {cond.shape[1]} channels, but the latent has "
                             f"{t} frames of {w}x{h} and this model ({self.lumiere_config.role}) takes {k} channels; "
                             f"use the latent that came with the conditioning")
        return comfy.utils.resize_to_batch_size(cond, noise.shape[0]).to(device, noise.dtype)

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kw):
        # core context windows slice x but not c_concat (0.3.75): slice it to the current window here
        window = transformer_options.get("context_window")
        if window is not None and c_concat is not None and c_concat.shape[2] != x.shape[2]:
            c_concat = take_frames(c_concat, window.index_list)
        return super()._apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kw)


def take_frames(video: torch.Tensor, frames: list[int]) -> torch.Tensor:
    """The frames (a context window's index list) of a video tensor (b, c, t, h, w)."""
    return video.index_select(2, torch.tensor(frames, device=video.device))


def lumiere_net(model) -> torch.nn.Module:
    """The library network (STUNet or UNet2D) inside a MODEL, or a ValueError naming the input."""
    base = getattr(model, "model", None)
    if not isinstance(base, LumiereModel):
        raise ValueError(f"model: expected a MODEL from the Lumiere loader, got {type(base).__name__}")
    return base.diffusion_model.net


def lumiere_config(model) -> ModelConfig:
    lumiere_net(model)
    return model.model.lumiere_config


def check_base_model(model, name: str = "model") -> None:
    """A base (text/image-to-video) model, not an SSR one: an SSR model would sample text-to-video from a zero
    low-res input."""
    config = lumiere_config(model)
    if config.conditioning == "lowres":
        raise ValueError(f"{name}: expected a base Lumiere model (text/image-to-video), got an SSR checkpoint (role "
                         f"{config.role!r}); give it to Lumiere SSR Upscale with the base's output, and load a base "
                         f"model for this sampler")


def check_video_shape(model, shape, name: str) -> None:
    """Frames and size the network can take, with errors that name the input."""
    net = lumiere_net(model)
    if len(shape) != 5 or shape[1] != 3:
        raise ValueError(f"{name}: expected a Lumiere video latent [B, 3, T, H, W], got {list(shape)}; "
                         f"make it with Lumiere Empty Video, Lumiere Conditioning or Lumiere Frames to Latent")
    _, _, t, h, w = shape
    if isinstance(net, STUNet):  # the model's own checks, naming the ComfyUI input
        net.check_num_frames(t, name)
    check_spatial_size(h, w, (net.unet if isinstance(net, STUNet) else net).cfg.num_levels, name)


def check_memory(model, shape, name: str, fix: str, frames_total: int | None = None) -> None:
    """Refuse, before anything large is allocated, a sampling whose estimated memory (`lumiere.memory`: one step's
    activations at shape `shape` (b, 3, t, h, w) with classifier-free guidance, plus the sampler's copies of the
    whole latent of `frames_total` frames) exceeds what the device has free; the error names the input, both
    figures and `fix`."""
    cfg = lumiere_config(model)
    dtype = model.model.get_dtype()
    need = sampling_memory_estimate(cfg, tuple(shape), dtype=dtype if dtype.is_floating_point else torch.float32,
                                    latent_frames=frames_total)
    free = mm.get_free_memory(model.load_device)
    if need > free:
        raise ValueError(f"{name}: expected a video whose sampling fits the {format_bytes(free)} free on "
                         f"{model.load_device}, got {list(shape)} needing about {format_bytes(need)}; {fix}")


# weight storage as core's diffusion-model loaders name it. "default": ComfyUI's choice for the device; fp32 / bf16:
# weights and compute in that dtype; fp8: weights stored in 8 bits, each layer cast to the compute dtype ComfyUI
# picks for the device when it runs (torch casts fp8 on every device; fp8 matrix units are not used)
FP8_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
WEIGHT_DTYPES = ("default",) + tuple(PRECISIONS) + tuple(FP8_DTYPES)


def load_model_patcher(path: str, weight_dtype: str = "default") -> tuple[comfy.model_patcher.ModelPatcher,
                                                                           ModelConfig, dict]:
    """Checkpoint -> ModelPatcher (the steps of comfy.sd.load_diffusion_model_state_dict) + config + raw state.

    The patcher's `cached_patcher_init` re-loads it from the file (core's device-selection and multi-GPU nodes
    re-create models with it)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype: expected one of {list(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    state, config = load_state(path)  # CheckpointError names the file
    net_state = {k: v for k, v in state.items() if k.startswith("net.")}
    cfg = LumiereComfyConfig(config)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    if weight_dtype == "default":
        dtype = mm.unet_dtype(model_params=comfy.utils.calculate_parameters(net_state),
                              supported_dtypes=cfg.supported_inference_dtypes)
        compute = mm.unet_manual_cast(dtype, load_device, cfg.supported_inference_dtypes)
    elif weight_dtype in FP8_DTYPES:
        dtype = FP8_DTYPES[weight_dtype]
        compute = mm.unet_manual_cast(dtype, load_device, cfg.supported_inference_dtypes)
    else:
        dtype, compute = PRECISIONS[weight_dtype], None  # computed in the weights' dtype, as chosen
    cfg.set_inference_dtype(dtype, compute)
    model = cfg.get_model(device=offload_device)
    load_state_into(path, model.diffusion_model.net, net_state, "net.")  # strict, errors name file and key
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    patcher.cached_patcher_init = (reload_model_patcher, (path, weight_dtype))
    return patcher, config, state


def reload_model_patcher(path: str, weight_dtype: str = "default",
                         disable_dynamic: bool = False) -> comfy.model_patcher.ModelPatcher:
    """The MODEL of `path` loaded afresh: the Loader's `cached_patcher_init` (this loader always makes a plain,
    non-dynamic ModelPatcher, so `disable_dynamic` changes nothing)."""
    return load_model_patcher(path, weight_dtype)[0]


# ---- CLIP: the built-in word-level text encoder behind core CLIPTextEncode -------------------------------------

CLIP_KEY = "lumiere"


class LumiereTokenizer:
    """Word tokenizer with ComfyUI prompt weights "(word:1.2)"; output length is the encoder's fixed max_tokens."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):
        cfg = tokenizer_data["lumiere_text"]
        self.words = WordTokenizer(cfg.vocab, cfg.max_tokens)

    def tokenize_with_weights(self, text: str, return_word_ids=False, **kwargs):
        n = self.words.max_tokens
        segments = [(text, 1.0)] if kwargs.get("disable_weights") else token_weights(escape_important(text), 1.0)
        words = [(w, weight) for seg, weight in segments for w in split_words(unescape_important(seg))]
        # what the encoder loses (characters outside a-z 0-9, unknown words, words past its length), said once per
        # encoded prompt (core caches the encoding; sampling steps never tokenize)
        for problem in self.words.problems(" ".join(unescape_important(seg) for seg, _ in segments), "text"):
            logging.warning("Lumiere CLIP: %s", problem)
        pairs = [(self.words.index.get(w, UNK), weight) for w, weight in words]
        pairs = pairs[: n - 1] + [(END, 1.0)]  # as WordTokenizer: truncate, [end], pad
        pairs += [(PAD, 1.0)] * (n - len(pairs))
        if return_word_ids:
            pairs = [(tok, weight, i + 1 if tok not in (END, PAD) else 0) for i, (tok, weight) in enumerate(pairs)]
        return {CLIP_KEY: [pairs]}

    def untokenize(self, token_weight_pair):
        return [(p, self.words.vocab[p[0]]) for p in token_weight_pair]

    def state_dict(self):
        return {}


class LumiereTextModel(torch.nn.Module, ClipTokenWeightEncoder):
    """The library TextEncoder as a CLIP `cond_stage_model`; weights are applied as core does (toward the empty
    prompt), and the empty prompt encodes exactly as the library's unconditional context."""

    def __init__(self, text_config, device=None, dtype=None, model_options={}):
        super().__init__()
        self.encoder = TextEncoder(text_config).to(device=device, dtype=dtype)
        self.dtypes = {dtype or torch.float32}
        self.special_tokens = {"end": END, "pad": PAD}
        self.max_tokens = text_config.max_tokens

    def gen_empty_tokens(self, special_tokens, length):
        return [END] + [PAD] * (self.max_tokens - 1)

    def encode(self, token_lists):
        device = self.encoder.position_embedding.device
        return self.encoder(torch.tensor(token_lists, dtype=torch.long, device=device)).float(), None

    def encode_token_weights(self, token_weight_pairs):
        return ClipTokenWeightEncoder.encode_token_weights(self, token_weight_pairs[CLIP_KEY])

    def load_sd(self, sd):
        return self.encoder.load_state_dict(sd, strict=True)

    def reset_clip_options(self):
        pass

    def set_clip_options(self, options):
        pass  # no clip-skip layers or projected pooling in this encoder


def build_clip(path: str, config: ModelConfig, state: dict) -> comfy.sd.CLIP | None:
    """A core CLIP around the checkpoint's built-in text encoder (None for external-embedding models)."""
    if config.text.kind != "builtin":
        return None
    target = comfy.supported_models_base.ClipTarget(LumiereTokenizer, LumiereTextModel)
    target.params = {"text_config": config.text}
    te_state = {k: v for k, v in state.items() if k.startswith("text_encoder.")}
    clip = comfy.sd.CLIP(target, tokenizer_data={"lumiere_text": config.text},
                         parameters=comfy.utils.calculate_parameters(te_state),
                         model_options={"dtype": torch.float32})  # the default TE dtype is fp16, even on CPU
    load_state_into(path, clip.cond_stage_model.encoder, te_state, "text_encoder.")
    return clip
