"""lumiere.lora and lumiere.lora_eval: the diagonal example clips, the motion reader, and the adapter training loop
(no ComfyUI)."""
from __future__ import annotations

import pytest
import torch

from lumiere import build_bundle, get_preset
from lumiere.data.procedural import ProceduralClips
from lumiere.lora import DIAGONALS, HELDOUT_LOOKS, TRAIN_LOOKS, diagonal_clips, train_adapters
from lumiere.lora_eval import motion_figures, velocity


@pytest.mark.parametrize("direction", list(DIAGONALS))
def test_diagonal_clips_move_on_their_diagonal(direction):
    video, captions = diagonal_clips(TRAIN_LOOKS, torch.Generator().manual_seed(0), direction=direction)
    assert video.shape == (len(TRAIN_LOOKS), 3, 16, 32, 32) and video.min() >= -1 and video.max() <= 1
    assert captions[0] == "a red circle moving right on black"
    figures = motion_figures(video, direction, "right")
    assert figures["on_target_rate"] == 1.0 and figures["on_axis_rate"] == 0.0
    assert 0.9 < figures["across_over_along"] < 1.1
    for clip in video:  # the whole path stays inside the frame: the object is seen in every frame
        assert velocity(clip)[2] == 16


def test_diagonal_clips_are_seeded_and_named_inputs_checked():
    a, _ = diagonal_clips(TRAIN_LOOKS, torch.Generator().manual_seed(1))
    b, _ = diagonal_clips(TRAIN_LOOKS, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="direction: expected one of"):
        diagonal_clips(TRAIN_LOOKS, torch.Generator(), direction="sideways")
    with pytest.raises(ValueError, match="looks: expected"):
        diagonal_clips([("purple", "circle", "black")], torch.Generator())


def test_heldout_looks_are_not_trained_on():
    assert not set(HELDOUT_LOOKS) & set(TRAIN_LOOKS)


def test_motion_reader_on_the_base_models_motion():
    """Clips of the four axis directions (the demo data) read as on their axis, never on a diagonal."""
    data = ProceduralClips(split="all")
    g = torch.Generator().manual_seed(0)
    right = data.render_specs([dict(colour="red", shape="circle", direction="right", background="black")] * 4, g)
    figures = motion_figures(right, "down-right", "right")
    assert figures["on_axis_rate"] == 1.0 and figures["on_target_rate"] == 0.0 and abs(
        figures["mean_direction_deg"]) < 5
    down = data.render_specs([dict(colour="blue", shape="square", direction="down", background="gray")] * 2, g)
    assert motion_figures(down, "down-left", "down")["on_axis_rate"] == 1.0
    still = right[:, :, :1].expand(-1, -1, 16, -1, -1)  # no motion: on neither
    assert motion_figures(still)["moving"] == 0 and motion_figures(still)["on_axis_rate"] == 0.0


def test_train_adapters_fits_the_clips_and_is_seeded():
    """A stand-in adapter (a trainable scale on a tiny STUNet's output) is optimised on the clips it is given, one
    callback per step; the same seed gives the same losses and weights."""
    cfg = get_preset("tiny")
    video, captions = diagonal_clips(TRAIN_LOOKS[:2], torch.Generator().manual_seed(0), size=cfg.resolution,
                                     frames=cfg.num_frames)

    def run(seed):
        torch.manual_seed(0)
        bundle = build_bundle(cfg)
        model = bundle.model.requires_grad_(False)
        scale = torch.nn.Parameter(torch.zeros(()))

        def net(x, t, ctx):
            return model(x, t, ctx) * (1 + scale)
        contexts = bundle.text_encoder.encode(captions).detach()
        cond = torch.zeros(2, cfg.unet.in_channels - 3, *video.shape[2:]) if cfg.unet.in_channels > 3 else None
        steps = []
        losses = train_adapters(net, [scale], video, contexts, cond, cfg.sigma_min, cfg.sigma_max, steps=12,
                                lr=0.05, batch_size=2, seed=seed, callback=lambda i, loss: steps.append(i))
        assert steps == list(range(12))
        return losses, float(scale.detach())
    first, scale = run(0)
    assert run(0) == (first, scale)
    assert scale != 0
    with pytest.raises(ValueError, match="positive: expected one text context per clip"):
        train_adapters(lambda x, t, c: x[:, :3], [torch.nn.Parameter(torch.zeros(()))], video,
                       torch.zeros(3, 8, 16), None, 0.002, 160.0, 1, 0.1)
