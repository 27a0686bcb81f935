"""Seeded procedural captioned clips: one shape of one colour moving in one direction over a plain background.

Caption: "a {colour} {shape} moving {direction} on {background}" (7 words; fits the 8-token text encoder).
The object moves at `speed` px/frame (at 32 px; scaled with the resolution), starting near the wall it moves
away from. By default (`bounce=False`) each clip's speed is capped so that the object never reaches the far wall:
the motion is one straight, constant-speed path over the whole clip (a mid-clip reversal taught the first demo
models that "something jumps" around frame 8-12). With `bounce=True` the drawn speed is kept and the object
bounces off the far wall (with 16 frames at <= 2 px/frame it travels >= 9 frames before any bounce).

12 of the 72 (colour, shape, direction) combinations are held out of training (each colour twice, each shape
4 times, each direction 3 times); evaluation prompts use only those. Everything is drawn from a
`torch.Generator`, so a batch is a pure function of the generator state (exact resume).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

COLOURS = {
    "red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.15, 0.25, 1.0),
    "yellow": (1.0, 0.95, 0.1), "cyan": (0.1, 0.95, 0.95), "magenta": (0.95, 0.1, 0.95),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
BACKGROUNDS = {"black": (0.0, 0.0, 0.0), "gray": (0.45, 0.45, 0.45), "white": (1.0, 1.0, 1.0)}
COLOUR_NAMES = tuple(COLOURS)
BG_NAMES = tuple(BACKGROUNDS)
VOCAB = ("a", "moving", "on") + COLOUR_NAMES + SHAPES + DIRECTIONS + BG_NAMES
# unit velocity (dx, dy) in image coordinates (y grows downward)
DIR_VEC = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def caption(colour: str, shape: str, direction: str, background: str) -> str:
    return f"a {colour} {shape} moving {direction} on {background}"


def heldout_combos() -> list[tuple[str, str, str]]:
    """12 unseen (colour, shape, direction) combos: balanced over colours (2x), shapes (4x), directions (3x)."""
    return [(COLOUR_NAMES[i % 6], SHAPES[i % 3], DIRECTIONS[i % 4]) for i in range(12)]


def train_combos() -> list[tuple[str, str, str]]:
    held = set(heldout_combos())
    return [c for c in itertools.product(COLOUR_NAMES, SHAPES, DIRECTIONS) if c not in held]


def render(centers: torch.Tensor, radius: torch.Tensor, shape_idx: torch.Tensor, colour: torch.Tensor,
           background: torch.Tensor, size: int, supersample: int = 2) -> torch.Tensor:
    """Anti-aliased frames.  centers (b, t, 2) px (x, y), radius (b,), shape_idx (b,), colour/background (b, 3)
    -> (b, 3, t, size, size) in -1..1"""
    b, t, _ = centers.shape
    n = size * supersample
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / supersample  # pixel-centre coordinates
    dx = coords[None, None, None, :] - centers[..., 0, None, None]  # (b, t, 1, n)
    dy = coords[None, None, :, None] - centers[..., 1, None, None]  # (b, t, n, 1)
    r = radius[:, None, None, None]
    circle = (dx ** 2 + dy ** 2) <= r ** 2
    square = torch.maximum(dx.abs(), dy.abs()) <= 0.85 * r
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= (dy + r) * 0.6)
    s = shape_idx[:, None, None, None]
    inside = torch.where(s == 0, circle, torch.where(s == 1, square, triangle)).float()  # (b, t, n, n)
    cover = F.avg_pool2d(inside.reshape(b * t, 1, n, n), supersample).reshape(b, 1, t, size, size)
    col = colour[:, :, None, None, None]
    bg = background[:, :, None, None, None]
    frames = bg * (1 - cover) + col * cover
    return frames * 2 - 1


def appearance(specs: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The specs' shape, colour and background as the renderers take them: shape_idx (b,), colour and background
    (b, 3) in 0..1."""
    shape_idx = torch.tensor([SHAPES.index(s["shape"]) for s in specs])
    colour = torch.tensor([COLOURS[s["colour"]] for s in specs])
    background = torch.tensor([BACKGROUNDS[s["background"]] for s in specs])
    return shape_idx, colour, background


def random_frames(clips: tuple[torch.Tensor, list[str], list[dict]], generator: torch.Generator):
    """One random frame of each clip (the T2I stage's images): (video (n, 3, t, s, s), captions, specs) ->
    (images (n, 3, s, s), captions, specs)"""
    video, caps, specs = clips
    idx = torch.randint(video.shape[2], (video.shape[0],), generator=generator)
    return video[torch.arange(video.shape[0]), :, idx], caps, specs


def bounce(p: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Reflect positions p into [lo, hi] (elementwise, any number of bounces)."""
    span = (hi - lo).clamp(min=1e-6)
    q = torch.remainder(p - lo, 2 * span)
    return lo + torch.where(q > span, 2 * span - q, q)


class ProceduralClips:
    """Batches of captioned clips (b, 3, t, size, size) in -1..1.

    split: "train" (the 60 training combos), "heldout" (the 12 unseen ones) or "all".
    speed: (min, max) px/frame at 32 px (scaled by size / 32). radius: (min, max) half-size at 32 px.
    bounce: False = cap each clip's speed so it never reaches the far wall; True = keep it and bounce.
    """

    def __init__(self, size: int = 32, frames: int = 16, split: str = "train",
                 speed: tuple[float, float] = (1.4, 2.0), radius: tuple[float, float] = (4.0, 6.0),
                 backgrounds: tuple[str, ...] = BG_NAMES, bounce: bool = False):
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split: expected 'train', 'heldout' or 'all', got {split!r}")
        self.size, self.frames, self.split = size, frames, split
        self.speed, self.radius = tuple(speed), tuple(radius)
        self.backgrounds = tuple(backgrounds)
        self.bounce = bool(bounce)
        for bgn in self.backgrounds:
            if bgn not in BACKGROUNDS:
                raise ValueError(f"background: expected one of {BG_NAMES}, got {bgn!r}")
        self.combos = {"train": train_combos(), "heldout": heldout_combos(),
                       "all": list(itertools.product(COLOUR_NAMES, SHAPES, DIRECTIONS))}[split]

    def sample_specs(self, n: int, generator: torch.Generator) -> list[dict]:
        ci = torch.randint(len(self.combos), (n,), generator=generator).tolist()
        bi = torch.randint(len(self.backgrounds), (n,), generator=generator).tolist()
        return [dict(colour=self.combos[c][0], shape=self.combos[c][1], direction=self.combos[c][2],
                     background=self.backgrounds[b]) for c, b in zip(ci, bi)]

    def render_specs(self, specs: list[dict], generator: torch.Generator, frames: int | None = None,
                     size: int | None = None) -> torch.Tensor:
        """Clips for given specs (colour, shape, direction, background); positions/speeds drawn from `generator`."""
        frames = frames or self.frames
        size = size or self.size
        k = size / 32.0
        n = len(specs)
        u = torch.rand(n, 5, generator=generator)
        radius = (self.radius[0] + (self.radius[1] - self.radius[0]) * u[:, 0]) * k
        speed = (self.speed[0] + (self.speed[1] - self.speed[0]) * u[:, 1]) * k
        lo, hi = radius + 0.5 * k, size - radius - 0.5 * k
        vel = torch.tensor([DIR_VEC[s["direction"]] for s in specs])  # (n, 2)
        # along the motion: start within 3 px (at 32) of the wall it moves away from; across: anywhere
        along0 = lo + 3.0 * k * u[:, 2]
        across = lo + (hi - lo) * u[:, 3]
        forward = (vel.sum(dim=1) > 0)  # right/down start at lo, left/up at hi
        start_along = torch.where(forward, along0, hi - (along0 - lo))
        if not self.bounce and frames > 1:  # the room ahead, spread over the clip: the far wall is never reached
            room = torch.where(forward, hi - start_along, start_along - lo)
            speed = torch.minimum(speed, room / (frames - 1))
        horizontal = vel[:, 0] != 0
        x0 = torch.where(horizontal, start_along, across)
        y0 = torch.where(horizontal, across, start_along)
        tt = torch.arange(frames, dtype=torch.float32)
        x = x0[:, None] + vel[:, 0, None] * speed[:, None] * tt[None]
        y = y0[:, None] + vel[:, 1, None] * speed[:, None] * tt[None]
        x = bounce(x, lo[:, None], hi[:, None])
        y = bounce(y, lo[:, None], hi[:, None])
        return render(torch.stack([x, y], dim=-1), radius, *appearance(specs), size)

    def clips(self, n: int, generator: torch.Generator, frames: int | None = None,
              size: int | None = None) -> tuple[torch.Tensor, list[str], list[dict]]:
        """n random clips -> (video (n, 3, t, s, s), captions, specs)"""
        specs = self.sample_specs(n, generator)
        video = self.render_specs(specs, generator, frames, size)
        return video, [caption(**s) for s in specs], specs

    def images(self, n: int, generator: torch.Generator, size: int | None = None):
        """n single frames (the T2I stage): a random frame of a random clip -> (images (n, 3, s, s), captions)"""
        return random_frames(self.clips(n, generator, size=size), generator)


def eval_specs(n_per_combo: int) -> list[dict]:
    """The held-out evaluation clips: every held-out combo `n_per_combo` times, backgrounds alternating."""
    out = []
    for k in range(n_per_combo):
        for i, (c, s, d) in enumerate(heldout_combos()):
            out.append(dict(colour=c, shape=s, direction=d, background=BG_NAMES[(i + k) % 2]))  # black / gray
    return out
