"""Model configurations and the three presets (`tiny`, `demo`, `paper`).

A config is plain data: it is written as JSON into every checkpoint, so a file rebuilds its own model.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

PARAMETERIZATION = "v"  # the network predicts v = alpha * eps - sigma * x0
SCHEDULE = "cosine"  # continuous: alpha = cos(pi t / 2), sigma = sin(pi t / 2), t in (0, 1)


@dataclass
class UNetConfig:
    """The text-to-image U-Net (frozen after the T2I stage)."""

    in_channels: int = 3  # 3 for T2I; 7 for <J, C, M>; 6 for SSR (noisy + up-sampled low-res)
    out_channels: int = 3
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4)  # one entry per level; a spatial /2 between levels
    num_res_blocks: int = 1
    attn_levels: tuple[int, ...] = (2,)  # levels with spatial self/cross attention
    head_dim: int = 32
    context_dim: int = 64  # width d of the text context (b, n, d)
    dropout: float = 0.0

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)


@dataclass
class TemporalConfig:
    """The layers the inflation adds (the only ones trained in the temporal stage)."""

    # one flag per spatial down-sampling: True = a temporal /2 follows it (and a x2 follows the matching up-sampling)
    temporal_down: tuple[bool, ...] = (True, True)
    conv_kernel: int = 3  # temporal kernel of the factorized (2+1)D blocks and of the resampling convs
    attn_layers: int = 2  # stacked temporal attention layers at the coarsest level
    attn_head_dim: int = 32
    # "temporal": 1-D attention over frames at each pixel (the paper);
    # "spacetime": joint attention over (t, y, x) tokens of the coarsest level (cheap there; helps tiny models)
    attn_mode: str = "temporal"
    text_cross_attention: bool = True  # the temporal attention also attends to the text tokens


@dataclass
class TextConfig:
    """The built-in word-level text encoder; `kind="external"` takes embeddings of width `width` instead."""

    kind: str = "builtin"
    vocab: tuple[str, ...] = ()
    max_tokens: int = 8
    width: int = 64
    layers: int = 2
    heads: int = 2


@dataclass
class ModelConfig:
    """Everything needed to rebuild a checkpoint's model and to use it correctly."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    temporal: TemporalConfig | None = field(default_factory=TemporalConfig)  # None: a plain T2I U-Net
    text: TextConfig = field(default_factory=TextConfig)
    role: str = "base"  # base | ssr | t2i | style
    conditioning: str = "jcm"  # none | jcm (C 3 ch + M 1 ch) | lowres (3 ch up-sampled video, SSR)
    parameterization: str = PARAMETERIZATION
    schedule: str = SCHEDULE
    sigma_min: float = 0.002
    sigma_max: float = 160.0
    num_frames: int = 16
    resolution: int = 32  # frames are resolution x resolution (H and W may be any valid multiple)
    fps: int = 8
    scale: int = 1  # SSR only: output size / input size
    preset: str = "demo"
    notes: dict[str, Any] = field(default_factory=dict)  # free-form (training summary, data, ...)
    # how the model is meant to be sampled, where it differs from the defaults (`pipeline.sampling_defaults`): a
    # distilled model's {"steps", "cfg", "sampler", "scheduler", "sigmas", ...} (`lumiere.train` stage distill)
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def cond_channels(self) -> int:
        return {"none": 0, "jcm": 4, "lowres": 3}[self.conditioning]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ModelConfig":
        d = copy.deepcopy(d)
        unet = UNetConfig(**_tuples(d.pop("unet")))
        temporal = d.pop("temporal")
        temporal = None if temporal is None else TemporalConfig(**_tuples(temporal))
        text = TextConfig(**_tuples(d.pop("text")))
        return ModelConfig(unet=unet, temporal=temporal, text=text, **d)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def get_preset(name: str) -> ModelConfig:
    """A fresh copy of a preset: `tiny` (tests), `demo` (shipped models), `paper` (Imagen-scale, GPU)."""
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return copy.deepcopy(PRESETS[name])


PRESETS: dict[str, ModelConfig] = {
    # < 1 M parameters: unit tests and CI smoke training.
    "tiny": ModelConfig(
        unet=UNetConfig(in_channels=7, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                        attn_levels=(1,), head_dim=16, context_dim=32),
        temporal=TemporalConfig(temporal_down=(True,), attn_layers=1, attn_head_dim=16),
        text=TextConfig(max_tokens=8, width=32, layers=1, heads=2),
        num_frames=8, resolution=16, preset="tiny",
    ),
    # The shipped demo base model: 32x32, 16 frames (16 -> 8 -> 4 frames at 32/16/8 px).
    "demo": ModelConfig(
        unet=UNetConfig(in_channels=7, base_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1,
                        attn_levels=(2,), head_dim=32, context_dim=64),
        temporal=TemporalConfig(temporal_down=(True, True), attn_layers=1, attn_head_dim=32,
                                attn_mode="spacetime"),
        text=TextConfig(max_tokens=8, width=64, layers=2, heads=2),
        num_frames=16, resolution=32, fps=8, preset="demo",
    ),
    # The shipped demo SSR: 32 -> 64 px (x2), trained and run on 8-frame windows (temporal MultiDiffusion).
    "ssr_demo": ModelConfig(
        unet=UNetConfig(in_channels=6, base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
                        attn_levels=(), head_dim=32, context_dim=32),
        temporal=TemporalConfig(temporal_down=(True, False), attn_layers=1, attn_head_dim=32,
                                attn_mode="temporal"),
        text=TextConfig(max_tokens=8, width=32, layers=1, heads=2),
        role="ssr", conditioning="lowres", num_frames=8, resolution=64, fps=8, scale=2, preset="ssr_demo",
    ),
    # Imagen-scale pixel base at 128x128x80 frames (80 -> 40 -> 20 -> 10 -> 5). For GPU users; T5-XXL width.
    "paper": ModelConfig(
        unet=UNetConfig(in_channels=7, base_channels=256, channel_mult=(1, 2, 3, 4, 4), num_res_blocks=3,
                        attn_levels=(2, 3, 4), head_dim=64, context_dim=4096),
        temporal=TemporalConfig(temporal_down=(True, True, True, True), attn_layers=4, attn_head_dim=64,
                                attn_mode="temporal"),
        text=TextConfig(kind="external", max_tokens=128, width=4096),
        num_frames=80, resolution=128, fps=16, preset="paper",
    ),
}
