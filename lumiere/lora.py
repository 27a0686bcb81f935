"""Motion LoRA on a user's clips: the training loop and example clips of a motion the demo models do not make.

- `train_adapters`: the model's own objective (v-prediction MSE on the continuous cosine schedule, noise levels
  drawn as in pre-training) over given clips, text contexts and conditioning channels, optimising whatever
  adapter parameters a host has put on the network (inside ComfyUI: core's LoRA adapters, `nodes/lora.py`).
  A few clips of one motion teach it; the adapters are the only trainable weights.
- `diagonal_clips`: the procedural shapes (`lumiere.data.procedural`) moving on a diagonal, captioned with a
  plain direction (default: "moving right" for a down-right path); the demo models only ever saw the four axis
  directions, so a diagonal is a motion they do not make.
The reader of the motion (the object's trajectory from pixels) is `lumiere.lora_eval`.
"""
from __future__ import annotations

from typing import Callable

import torch

from .data.procedural import BACKGROUNDS, COLOURS, SHAPES, caption, render
from .diffusion.schedule import sample_t, v_loss

# image coordinates (y grows downward): the unit step of each diagonal
DIAGONALS = {"down-right": (1.0, 1.0), "down-left": (-1.0, 1.0), "up-right": (1.0, -1.0), "up-left": (-1.0, -1.0)}
# the example clips' appearance: the held-out prompts use colours, shapes and backgrounds in other combinations
TRAIN_LOOKS = (("red", "circle", "black"), ("green", "square", "gray"), ("blue", "triangle", "black"),
               ("red", "square", "gray"), ("green", "triangle", "black"), ("blue", "circle", "gray"))
HELDOUT_LOOKS = (("yellow", "circle", "black"), ("cyan", "square", "white"), ("magenta", "triangle", "gray"),
                 ("yellow", "triangle", "white"), ("cyan", "circle", "gray"), ("magenta", "square", "black"),
                 ("yellow", "square", "gray"), ("cyan", "triangle", "black"), ("magenta", "circle", "white"),
                 ("red", "triangle", "white"), ("green", "circle", "white"), ("blue", "square", "white"))


def diagonal_clips(looks, generator: torch.Generator, direction: str = "down-right", word: str = "right",
                   size: int = 32, frames: int = 16, speed: tuple[float, float] = (1.0, 1.25),
                   radius: tuple[float, float] = (4.0, 5.5)) -> tuple[torch.Tensor, list[str]]:
    """One clip per (colour, shape, background) of `looks`: the object starts near the corner it moves away from
    and moves along the diagonal `direction` at `speed` px/frame per axis (at 32 px; capped so that it never
    reaches the far corner), captioned "a {colour} {shape} moving {word} on {background}".
    -> (video (n, 3, frames, size, size) in -1..1, captions)"""
    if direction not in DIAGONALS:
        raise ValueError(f"direction: expected one of {list(DIAGONALS)}, got {direction!r}")
    for colour, shape, background in looks:
        if colour not in COLOURS or shape not in SHAPES or background not in BACKGROUNDS:
            raise ValueError(f"looks: expected (colour, shape, background) of {list(COLOURS)}, {list(SHAPES)}, "
                             f"{list(BACKGROUNDS)}, got {(colour, shape, background)}")
    n, k = len(looks), size / 32.0
    u = torch.rand(n, 4, generator=generator)
    r = (radius[0] + (radius[1] - radius[0]) * u[:, 0]) * k
    lo, hi = r + 0.5 * k, size - r - 0.5 * k
    step = torch.tensor(DIAGONALS[direction])  # (2,)
    start = lo[:, None] + 3.0 * k * u[:, 1:3]  # near the low wall on both axes...
    start = torch.where(step[None] > 0, start, hi[:, None] - (start - lo[:, None]))  # ...or the high one
    room = torch.where(step[None] > 0, hi[:, None] - start, start - lo[:, None]).amin(dim=1)
    v = ((speed[0] + (speed[1] - speed[0]) * u[:, 3]) * k).minimum(room / max(frames - 1, 1))
    tt = torch.arange(frames, dtype=torch.float32)
    centers = start[:, None, :] + step[None, None, :] * v[:, None, None] * tt[None, :, None]  # (n, t, 2)
    video = render(centers, r, torch.tensor([SHAPES.index(s) for _, s, _ in looks]),
                   torch.tensor([COLOURS[c] for c, _, _ in looks]),
                   torch.tensor([BACKGROUNDS[b] for _, _, b in looks]), size)
    return video, [caption(c, s, word, b) for c, s, b in looks]


def train_adapters(net: Callable, params: list[torch.Tensor], clips: torch.Tensor, contexts: torch.Tensor,
                   cond: torch.Tensor | None, sigma_min: float, sigma_max: float, steps: int, lr: float,
                   batch_size: int = 1, seed: int = 0,
                   callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Optimise `params` (AdamW) so that `net` predicts v on `clips` as in pre-training.

    net(x (b, 3 + k, t, h, w), t (b,), context (b, L, D)) -> v (b, 3, t, h, w); clips (n, 3, t, h, w) in -1..1;
    contexts (n, L, D), one per clip; cond (n, k, t, h, w) concatenated after the noisy clip (None: no channels).
    Each step draws `batch_size` clips, their noise levels (`sample_t`, uniform in t over the model's range) and
    their noise from one generator seeded with `seed`. callback(step, loss) after every step (progress, Cancel).
    -> the loss of every step"""
    n = clips.shape[0]
    if contexts.shape[0] != n or (cond is not None and cond.shape[0] != n):
        raise ValueError(f"positive: expected one text context per clip ({n}), got {contexts.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = clips.device
    losses = []
    for step in range(steps):
        idx = torch.randperm(n, generator=generator)[:batch_size]
        while len(idx) < batch_size:  # fewer clips than the batch: draw again
            idx = torch.cat([idx, torch.randperm(n, generator=generator)])[:batch_size]
        t = sample_t(len(idx), sigma_min, sigma_max, generator).to(device)
        x0 = clips[idx]
        noise = torch.randn(x0.shape, generator=generator).to(device)
        loss = v_loss(net, x0, t, noise, None if cond is None else cond[idx], contexts[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
    return losses
