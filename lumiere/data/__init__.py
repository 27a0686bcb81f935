"""Training data: a seeded procedural captioned-clip generator (demo models, eval) and a folder dataset of videos."""
from .procedural import ProceduralClips, VOCAB, caption, heldout_combos, train_combos

__all__ = ["ProceduralClips", "VOCAB", "caption", "heldout_combos", "train_combos"]
