"""Seeded procedural clips of motion that needs the whole clip (issue 19): fast periodic motion and single
events that span all of a long clip.

Two families, one object of one colour over a plain background (the shapes, colours, backgrounds and renderer
of `lumiere.data.procedural`), 7-word captions (the 8-token text encoder reads 7 words + [end]):

- periodic: "a {colour} {shape} {motion} {tempo} on {background}", motion one of
  swings (left-right, sinusoidal), bobs (up-down, sinusoidal), orbits (a circle, clockwise on screen),
  bounces (a ball bouncing on a floor: |sin|); tempo fast / medium / slow = a period of 6 / 12 / 20 frames at
  16 fps (0.375 / 0.75 / 1.25 s). Against a keyframe stride of 4 frames (4 fps) "fast" is aliased (1.5
  keyframes per period: an orbit seen backwards), "medium" is barely resolved (3 per period).
- events: "a {colour} {shape} {event} {direction} on {background}", event one of
  crosses (wall to wall at constant speed over the whole motion), rebounds (to the far wall at constant speed,
  hitting it at the middle of the motion, and back to the start at its end).

Time is in seconds: a motion lasts `seconds` (5 s = 80 frames at 16 fps = 20 keyframes at 4 fps) and a clip
of `frames` frames at `fps` samples it at t = (offset + i) / fps, i = 0 .. frames - 1. A clip shorter than the
motion is a window of it at a random whole-frame offset (the TSR's 16-frame windows of 80-frame motions); so
20 frames at 4 fps are exactly every 4th frame of 80 at 16 fps of the same draw. Positions are point-sampled in
time (no motion blur), so sub-sampling aliases as a camera would. The shapes are those of
`procedural.render`, drawn with analytic edge coverage (`render_smooth`), so that slow paths (0.25 px/frame over
80 frames) move smoothly instead of in steps of the 2x super-sampling grid.

The held-out (colour, shape, motion, tempo) and (colour, shape, event, direction) combinations are never drawn
for training. Everything random comes from a `torch.Generator` (exact resume).
"""
from __future__ import annotations

import itertools
import math

import torch

from .procedural import (BACKGROUNDS, BG_NAMES, COLOUR_NAMES, DIR_VEC, DIRECTIONS, SHAPES, appearance,
                         random_frames)

PERIODIC_MOTIONS = ("swings", "bobs", "orbits", "bounces")
TEMPOS = ("fast", "medium", "slow")
PERIOD_SECONDS = {"fast": 6 / 16, "medium": 12 / 16, "slow": 20 / 16}  # 6 / 12 / 20 frames at 16 fps
EVENTS = ("crosses", "rebounds")
LONG_VOCAB = PERIODIC_MOTIONS + TEMPOS + EVENTS  # the words the shapes' vocabulary lacks
MOTION_SECONDS = 5.0  # the paper's clip: 80 frames at 16 fps


def periodic_caption(colour: str, shape: str, motion: str, tempo: str, background: str) -> str:
    return f"a {colour} {shape} {motion} {tempo} on {background}"


def event_caption(colour: str, shape: str, event: str, direction: str, background: str) -> str:
    return f"a {colour} {shape} {event} {direction} on {background}"


def long_caption(spec: dict) -> str:
    """The caption of a spec of either family (periodic specs have 'tempo', events 'direction')."""
    if "tempo" in spec:
        return periodic_caption(spec["colour"], spec["shape"], spec["motion"], spec["tempo"], spec["background"])
    return event_caption(spec["colour"], spec["shape"], spec["event"], spec["direction"], spec["background"])


def heldout_periodic() -> list[tuple[str, str, str, str]]:
    """24 of the 216 (colour, shape, motion, tempo) combos: each colour 4x, shape 8x, motion 6x, tempo 8x."""
    return [(COLOUR_NAMES[i % 6], SHAPES[i % 3], PERIODIC_MOTIONS[i % 4], TEMPOS[(i // 4 + i // 12) % 3])
            for i in range(24)]


def heldout_events() -> list[tuple[str, str, str, str]]:
    """16 of the 144 (colour, shape, event, direction) combos: each event 8x, direction 4x, shape 5-6x."""
    return [(COLOUR_NAMES[i % 6], SHAPES[i % 3], EVENTS[(i // 4) % 2], DIRECTIONS[i % 4]) for i in range(16)]


def _split(all_combos: list[tuple], held: list[tuple], split: str) -> list[tuple]:
    if split == "heldout":
        return list(held)
    if split == "all":
        return list(all_combos)
    held_set = set(held)
    return [c for c in all_combos if c not in held_set]


def periodic_combos(split: str) -> list[tuple[str, str, str, str]]:
    return _split(list(itertools.product(COLOUR_NAMES, SHAPES, PERIODIC_MOTIONS, TEMPOS)), heldout_periodic(), split)


def event_combos(split: str) -> list[tuple[str, str, str, str]]:
    return _split(list(itertools.product(COLOUR_NAMES, SHAPES, EVENTS, DIRECTIONS)), heldout_events(), split)


def render_smooth(centers: torch.Tensor, radius: torch.Tensor, shape_idx: torch.Tensor, colour: torch.Tensor,
                  background: torch.Tensor, size: int) -> torch.Tensor:
    """Frames with analytic anti-aliasing (coverage = a clamped signed distance per edge, so sub-pixel motion is
    continuous).  centers (b, t, 2) px (x, y), radius (b,), shape_idx (b,) (0 circle, 1 square, 2 triangle),
    colour/background (b, 3) in 0..1 -> (b, 3, t, size, size) in -1..1"""
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    dx = coords[None, None, None, :] - centers[..., 0, None, None]  # (b, t, 1, n)
    dy = coords[None, None, :, None] - centers[..., 1, None, None]  # (b, t, n, 1)
    r = radius[:, None, None, None]
    circle = (r + 0.5 - (dx ** 2 + dy ** 2).sqrt()).clamp(0, 1)
    half = 0.85 * r
    square = (half + 0.5 - dx.abs()).clamp(0, 1) * (half + 0.5 - dy.abs()).clamp(0, 1)
    side = (dx.abs() - 0.6 * (dy + r)) / math.sqrt(1 + 0.36)  # signed distance to the slanted sides
    triangle = (0.5 - side).clamp(0, 1) * (0.8 * r + 0.5 - dy).clamp(0, 1)
    s = shape_idx[:, None, None, None]
    cover = torch.where(s == 0, circle, torch.where(s == 1, square, triangle))[:, None]  # (b, 1, t, n, n)
    col = colour[:, :, None, None, None]
    bg = background[:, :, None, None, None]
    return (bg * (1 - cover) + col * cover) * 2 - 1


def periodic_path(motion: str, period: torch.Tensor, phase: torch.Tensor, amp: torch.Tensor, cx: torch.Tensor,
                  cy: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of one periodic motion.  period/phase/amp/cx/cy (n,) (s, rad, px, px, px), t (n, f) s
    -> x, y (n, f) px. `bounces`: cy is the floor contact height and amp the bounce height."""
    theta = 2 * math.pi * t / period[:, None] + phase[:, None]
    if motion == "swings":
        return cx[:, None] + amp[:, None] * torch.sin(theta), cy[:, None].expand_as(t)
    if motion == "bobs":
        return cx[:, None].expand_as(t), cy[:, None] + amp[:, None] * torch.sin(theta)
    if motion == "orbits":  # y grows downward: increasing theta turns clockwise on screen
        return cx[:, None] + amp[:, None] * torch.cos(theta), cy[:, None] + amp[:, None] * torch.sin(theta)
    if motion == "bounces":  # one floor contact per period
        return cx[:, None].expand_as(t), cy[:, None] - amp[:, None] * torch.sin(theta / 2).abs()
    raise ValueError(f"motion: expected one of {PERIODIC_MOTIONS}, got {motion!r}")


def event_path(event: str, direction: str, along0: torch.Tensor, travel: torch.Tensor, across: torch.Tensor,
               s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of one event.  along0/travel/across (n,) px, s (n, f) = time / the motion's length in 0..1
    -> x, y (n, f) px. crosses: along0 + travel * s; rebounds: out to along0 + travel at s = 1/2 and back."""
    if event == "crosses":
        frac = s
    elif event == "rebounds":
        frac = 1 - (2 * s - 1).abs()
    else:
        raise ValueError(f"event: expected one of {EVENTS}, got {event!r}")
    dx, dy = DIR_VEC[direction]
    along = along0[:, None] + travel[:, None] * frac
    if dx != 0:
        return along, across[:, None].expand_as(s)
    return across[:, None].expand_as(s), along


class LongMotionClips:
    """Batches of captioned clips (b, 3, frames, size, size) in -1..1 of periodic motion and single events.

    split: "train", "heldout" or "all" (per family, see `heldout_periodic` / `heldout_events`).
    fps: the clips' frame rate; seconds: the length of the whole motion a clip is (a window of).
    periodic: the fraction of periodic clips (the rest are events). radius: (min, max) half-size at 32 px.
    """

    def __init__(self, size: int = 32, frames: int = 80, fps: float = 16, split: str = "train",
                 seconds: float = MOTION_SECONDS, periodic: float = 0.6, radius: tuple[float, float] = (3.5, 5.0),
                 backgrounds: tuple[str, ...] = BG_NAMES):
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split: expected 'train', 'heldout' or 'all', got {split!r}")
        if not 0.0 <= periodic <= 1.0:
            raise ValueError(f"periodic: expected a fraction in 0..1, got {periodic}")
        if fps <= 0 or seconds <= 0:
            raise ValueError(f"fps, seconds: expected positive numbers, got {fps}, {seconds}")
        for bgn in backgrounds:
            if bgn not in BACKGROUNDS:
                raise ValueError(f"background: expected one of {BG_NAMES}, got {bgn!r}")
        self.size, self.frames, self.fps, self.split = size, frames, float(fps), split
        self.seconds, self.periodic, self.radius = float(seconds), float(periodic), tuple(radius)
        self.backgrounds = tuple(backgrounds)
        self.periodic_combos, self.event_combos = periodic_combos(split), event_combos(split)

    def sample_specs(self, n: int, generator: torch.Generator) -> list[dict]:
        fam = (torch.rand(n, generator=generator) < self.periodic).tolist()
        pi = torch.randint(len(self.periodic_combos), (n,), generator=generator).tolist()
        ei = torch.randint(len(self.event_combos), (n,), generator=generator).tolist()
        bi = torch.randint(len(self.backgrounds), (n,), generator=generator).tolist()
        specs = []
        for f, p, e, b in zip(fam, pi, ei, bi):
            if f:
                c, s, m, tempo = self.periodic_combos[p]
                specs.append(dict(colour=c, shape=s, motion=m, tempo=tempo, background=self.backgrounds[b]))
            else:
                c, s, ev, d = self.event_combos[e]
                specs.append(dict(colour=c, shape=s, event=ev, direction=d, background=self.backgrounds[b]))
        return specs

    def offsets(self, n: int, frames: int, generator: torch.Generator) -> torch.Tensor:
        """Whole-frame start of each clip's window in the motion (0 when the clip is as long as the motion). (n,)"""
        total = max(frames, round(self.seconds * self.fps))
        return torch.randint(total - frames + 1, (n,), generator=generator)

    def render_specs(self, specs: list[dict], generator: torch.Generator, frames: int | None = None,
                     size: int | None = None) -> torch.Tensor:
        """Clips for given specs; sizes, positions, phases and window offsets drawn from `generator`."""
        frames = frames or self.frames
        size = size or self.size
        k = size / 32.0
        n = len(specs)
        u = torch.rand(n, 6, generator=generator)
        offset = self.offsets(n, frames, generator)
        t = (offset[:, None] + torch.arange(frames)[None]).float() / self.fps  # (n, f) seconds
        radius = (self.radius[0] + (self.radius[1] - self.radius[0]) * u[:, 0]) * k
        lo, hi = radius + 0.5 * k, size - radius - 0.5 * k  # the centre's room (the object stays inside)
        x = torch.empty(n, frames)
        y = torch.empty(n, frames)
        for i, s in enumerate(specs):
            j = slice(i, i + 1)
            if "tempo" in s:
                period = torch.tensor([PERIOD_SECONDS[s["tempo"]]])
                phase = 2 * math.pi * u[j, 1]
                half = (hi[j] - lo[j]) / 2
                if s["motion"] == "bounces":  # floor contact in the lower part, height 45-75 % of the room
                    amp = (hi[j] - lo[j]) * (0.45 + 0.3 * u[j, 2])
                    cx = lo[j] + (hi[j] - lo[j]) * u[j, 3]
                    cy = hi[j] - (hi[j] - lo[j] - amp) * u[j, 4]
                else:  # the path's centre anywhere its amplitude (40-80 % of the half-room) allows
                    amp = half * (0.4 + 0.4 * u[j, 2])
                    cx = lo[j] + amp + (hi[j] - lo[j] - 2 * amp) * u[j, 3] if s["motion"] != "bobs" else \
                        lo[j] + (hi[j] - lo[j]) * u[j, 3]
                    cy = lo[j] + amp + (hi[j] - lo[j] - 2 * amp) * u[j, 4] if s["motion"] != "swings" else \
                        lo[j] + (hi[j] - lo[j]) * u[j, 4]
                x[i], y[i] = (v[0] for v in periodic_path(s["motion"], period, phase, amp, cx, cy, t[j]))
            else:
                dx, dy = DIR_VEC[s["direction"]]
                forward = (dx + dy) > 0
                margin = 3.0 * k * u[j, 1]  # start within 3 px (at 32) of the wall it leaves
                travel = (hi[j] - lo[j] - margin) * (0.85 + 0.15 * u[j, 2])
                along0 = lo[j] + margin if forward else hi[j] - margin
                travel = travel if forward else -travel
                across = lo[j] + (hi[j] - lo[j]) * u[j, 3]
                x[i], y[i] = (v[0] for v in event_path(s["event"], s["direction"], along0, travel, across,
                                                      t[j] / self.seconds))
        return render_smooth(torch.stack([x, y], dim=-1), radius, *appearance(specs), size)

    def clips(self, n: int, generator: torch.Generator, frames: int | None = None,
              size: int | None = None) -> tuple[torch.Tensor, list[str], list[dict]]:
        """n random clips -> (video (n, 3, t, s, s), captions, specs)"""
        specs = self.sample_specs(n, generator)
        video = self.render_specs(specs, generator, frames, size)
        return video, [long_caption(s) for s in specs], specs

    def images(self, n: int, generator: torch.Generator, size: int | None = None):
        """n single frames (the T2I stage): a random frame of a random clip -> (images (n, 3, s, s), captions)"""
        return random_frames(self.clips(n, generator, size=size), generator)
