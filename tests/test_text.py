"""The built-in word tokenizer and text encoder, and external embeddings."""
import pytest
import torch

from lumiere.checkpoint import build_bundle
from lumiere.configs import TextConfig, get_preset
from lumiere.models.text import END, PAD, UNK, TextEncoder, WordTokenizer
from lumiere.pipeline import encode_text, generate


def encoder(max_tokens: int = 6) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(TextConfig(vocab=("a", "red", "cat", "runs"), max_tokens=max_tokens, width=16, layers=1,
                                  heads=2)).eval()


def test_tokenizer():
    tok = WordTokenizer(("a", "red", "cat"), max_tokens=5)
    a, red, cat = (tok.index[w] for w in ("a", "red", "cat"))
    assert tok("A RED, cat!") == [a, red, cat, END, PAD]
    assert tok("a dog") == [a, UNK, END, PAD, PAD]
    assert tok("") == [END, PAD, PAD, PAD, PAD]
    assert tok("a a a a a a a") == [a, a, a, a, END]  # truncated, always ends with [end]
    assert tok.vocab[:3] == ["[pad]", "[end]", "[unk]"]


def test_encoder_shape_and_padding_zero():
    te = encoder()
    ctx = te.encode(["a red cat", "cat"])
    assert ctx.shape == (2, 6, 16)
    tokens = te.tokenize(["a red cat", "cat"])
    assert torch.count_nonzero(ctx[tokens == PAD]) == 0
    assert (ctx[tokens != PAD].abs().sum(-1) > 0).all()


def test_encoder_is_deterministic_and_batch_independent():
    te = encoder()
    with torch.no_grad():
        batch = te.encode(["a red cat runs", "cat"])
        alone = te.encode("cat")
    torch.testing.assert_close(batch[1:], alone, atol=1e-6, rtol=0)
    assert torch.equal(te.encode("a red cat"), te.encode("a red cat"))
    assert not torch.allclose(te.encode("a red cat"), te.encode("a cat"))


def test_padding_does_not_leak():
    """Padded keys are masked: a prompt's tokens encode the same whatever the pad length."""
    short, long = encoder(max_tokens=4), encoder(max_tokens=8)
    long.load_state_dict({**short.state_dict(), "position_embedding": torch.cat(
        [short.position_embedding.data, torch.randn(4, 16)])})
    with torch.no_grad():
        a, b = short.encode("red cat"), long.encode("red cat")
    torch.testing.assert_close(a, b[:, :4], atol=1e-6, rtol=0)


def test_external_kind_has_no_builtin_encoder():
    with pytest.raises(ValueError, match="external"):
        TextEncoder(TextConfig(kind="external", width=32))


def test_external_embeddings_drive_the_model():
    cfg = get_preset("tiny")
    cfg.text = TextConfig(kind="external", max_tokens=5, width=cfg.unet.context_dim)
    bundle = build_bundle(cfg)
    assert bundle.text_encoder is None
    with pytest.raises(ValueError, match="external"):
        encode_text(bundle, "a cat")
    ctx = torch.randn(1, 5, cfg.unet.context_dim)
    c, u = encode_text(bundle, "", context=ctx)
    assert c is ctx and torch.equal(u, torch.zeros_like(ctx))
    video = generate(bundle, "", context=ctx, steps=2, num_frames=2)
    other = generate(bundle, "", context=torch.randn(1, 5, cfg.unet.context_dim), steps=2, num_frames=2)
    assert video.shape == (1, 3, 2, 16, 16)
    assert not torch.equal(video, other)
