"""The demo "style" of the stylization stage: a warm sepia tone with dark scanlines, and the statistic that
measures it (warmth). The style stage trains on `style_transform` of the procedural frames; the eval measures
`style_statistic` of stylized samples."""
from __future__ import annotations

import torch


def style_transform(x: torch.Tensor) -> torch.Tensor:
    """The demo 'style': a warm sepia tone + dark scanlines, on frames in -1..1 (any leading dims, channel dim -3
    for images (.., 3, h, w))."""
    img = (x + 1) / 2
    r, g, b = img.unbind(dim=-3)
    lum = 0.3 * r + 0.59 * g + 0.11 * b
    sep = torch.stack([0.25 + 0.75 * lum, 0.12 + 0.6 * lum, 0.05 + 0.3 * lum], dim=-3)
    h = x.shape[-2]
    lines = torch.ones(h, 1, dtype=x.dtype)
    lines[1::2] = 0.7
    return (sep * lines).clamp(0, 1) * 2 - 1


def style_statistic(x: torch.Tensor) -> float:
    """Warmth: mean (R - B) in 0..1 units over all pixels of images/videos with channels at dim 1."""
    img = (x.float() + 1) / 2
    return float((img[:, 0] - img[:, 2]).mean())
