"""The built-in text encoder: a word-level tokenizer and a small transformer, stored in the model checkpoint.

Works offline. Its output has a fixed length `max_tokens`, padded positions zeroed, so the context a model was
trained on is reproduced exactly by the ComfyUI CLIP wrapper.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..configs import TextConfig
from .layers import Attention, FeedForward

SPECIAL_TOKENS = ("[pad]", "[end]", "[unk]")
PAD, END, UNK = 0, 1, 2


def split_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class WordTokenizer:
    """Lower-cased words -> ids; unknown words -> [unk]; [end] after the last word; [pad] to `max_tokens`."""

    def __init__(self, vocab: tuple[str, ...] | list[str], max_tokens: int):
        self.vocab = list(SPECIAL_TOKENS) + [w for w in vocab if w not in SPECIAL_TOKENS]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_tokens = max_tokens

    def problems(self, text: str, name: str = "prompt") -> list[str]:
        """What the encoder loses of `text`, one message each naming `name`: characters it cannot read (it reads
        a-z and 0-9 only: accents, other scripts and emoji are dropped), words it does not know (they encode as
        [unk]) and words past its length. Empty when the text is read whole."""
        out = []
        words = split_words(text)
        dropped = "".join(dict.fromkeys(ch for ch in text.lower() if not ch.isascii() and not ch.isspace()))
        if dropped:
            reads = f"reads {' '.join(words)!r}" if words else "reads nothing: the empty prompt"
            out.append(f"{name}: the text encoder reads a-z and 0-9 only; it drops {dropped!r} ({reads})")
        unknown = sorted({w for w in words if w not in self.index})
        if unknown:
            known = " ".join(w for w in self.vocab if w not in SPECIAL_TOKENS)
            out.append(f"{name}: the text encoder does not know {', '.join(repr(w) for w in unknown)} "
                       f"(they encode as 'unknown'); it knows: {known}")
        if len(words) > self.max_tokens - 1:
            out.append(f"{name}: {len(words)} words, the text encoder reads the first {self.max_tokens - 1}; "
                       f"dropped: {' '.join(words[self.max_tokens - 1:])!r}")
        return out

    def __call__(self, text: str) -> list[int]:
        ids = [self.index.get(w, UNK) for w in split_words(text)][: self.max_tokens - 1] + [END]
        return ids + [PAD] * (self.max_tokens - len(ids))


class TextLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, width // heads)
        self.ff = FeedForward(width)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias=bias)
        return x + self.ff(self.norm2(x))


class TextEncoder(nn.Module):
    """tokens (b, L) -> context (b, L, width); padded positions are exactly zero."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        if cfg.kind != "builtin":
            raise ValueError(f"text encoder kind: expected 'builtin' to build an encoder, got {cfg.kind!r}")
        self.cfg = cfg
        self.tokenizer = WordTokenizer(cfg.vocab, cfg.max_tokens)
        self.token_embedding = nn.Embedding(len(self.tokenizer.vocab), cfg.width)
        self.position_embedding = nn.Parameter(torch.randn(cfg.max_tokens, cfg.width) * 0.02)
        self.layers = nn.ModuleList(TextLayer(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = tokens != PAD  # (b, L)
        bias = torch.zeros(keep.shape, dtype=self.position_embedding.dtype, device=tokens.device)
        bias = bias.masked_fill(~keep, float("-inf"))[:, None, None, :]  # (b, 1, 1, L) over keys
        x = self.token_embedding(tokens) + self.position_embedding[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x) * keep[..., None].to(x.dtype)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([self.tokenizer(p) for p in prompts], dtype=torch.long,
                            device=self.position_embedding.device)

    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Prompts -> context (b, max_tokens, width). The empty prompt is the unconditional context."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self(self.tokenize(prompts))


def extend_vocab(encoder: TextEncoder, words: tuple[str, ...] | list[str], generator: torch.Generator) -> list[str]:
    """Add the words the encoder lacks to its vocabulary (in place; `encoder.cfg.vocab` follows, so a checkpoint
    keeps them). A new word's embedding is the mean of the old ones plus noise of their spread, seeded; the
    old words keep theirs exactly. Returns the words added."""
    new = [w for w in words if w not in encoder.tokenizer.index]
    if not new:
        return []
    old = encoder.token_embedding.weight.detach()
    rows = old.float().mean(0) + old.float().std(0) * torch.randn(len(new), old.shape[1], generator=generator)
    emb = nn.Embedding(old.shape[0] + len(new), old.shape[1]).to(old.device, old.dtype)
    with torch.no_grad():
        emb.weight.copy_(torch.cat([old, rows.to(old.device, old.dtype)]))
    emb.weight.requires_grad_(encoder.token_embedding.weight.requires_grad)
    encoder.token_embedding = emb
    encoder.cfg.vocab = tuple(encoder.cfg.vocab) + tuple(new)
    encoder.tokenizer = WordTokenizer(encoder.cfg.vocab, encoder.cfg.max_tokens)
    return new
