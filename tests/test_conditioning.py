"""<J, C, M> task recipes: values of C and M (1 = known), and shape errors that name the input."""
import pytest
import torch

from lumiere import conditioning as cond


def video(b=1, t=4, h=8, w=8, seed=0):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_binary(M):
    assert M.dtype == torch.float32 and set(M.unique().tolist()) <= {0.0, 1.0}


def test_text_to_video_is_all_unknown():
    C, M = cond.text_to_video(2, 4, 8, 8)
    assert C.shape == (2, 3, 4, 8, 8) and M.shape == (2, 1, 4, 8, 8)
    assert torch.count_nonzero(C) == 0 and torch.count_nonzero(M) == 0


def test_image_to_video_first_frame_known():
    image = video()[:, :, 0]
    C, M = cond.image_to_video(image, 5)
    assert C.shape == (1, 3, 5, 8, 8) and M.shape == (1, 1, 5, 8, 8)
    assert torch.equal(C[:, :, 0], image) and torch.count_nonzero(C[:, :, 1:]) == 0
    assert (M[:, :, 0] == 1).all() and torch.count_nonzero(M[:, :, 1:]) == 0
    assert_binary(M)


def test_inpaint_keeps_known_region():
    v = video()
    known = torch.ones(8, 8)
    known[2:5, 3:6] = 0  # the hole to generate
    C, M = cond.inpaint(v, known)
    assert M.shape == (1, 1, 4, 8, 8)
    assert torch.equal(M[0, 0, 2], known)
    assert torch.equal(C, v * known)
    assert torch.count_nonzero(C[:, :, :, 2:5, 3:6]) == 0
    # per-frame masks, and soft masks thresholded at 0.5
    per_frame = torch.rand(4, 8, 8)
    C, M = cond.inpaint(v, per_frame)
    assert torch.equal(M[0, 0], (per_frame > 0.5).float())
    assert_binary(M)


def test_outpaint_pads_with_unknown_border():
    v = video()
    C, M = cond.outpaint(v, (1, 2, 3, 0))  # left, right, top, bottom
    assert C.shape == (1, 3, 4, 11, 11) and M.shape == (1, 1, 4, 11, 11)
    assert torch.equal(C[:, :, :, 3:, 1:9], v)
    assert (M[:, :, :, 3:, 1:9] == 1).all()
    assert M.sum() == 4 * 8 * 8  # only the original area is known
    assert torch.count_nonzero(C * (1 - M)) == 0
    with pytest.raises(ValueError, match="pad"):
        cond.outpaint(v, (1, 2, 3))
    with pytest.raises(ValueError, match="pad"):
        cond.outpaint(v, (1, -1, 0, 0))


def test_cinemagraph_masks():
    image = video()[:, :, 0]
    animate = torch.zeros(8, 8)
    animate[4:, :] = 1  # the bottom half moves
    C, M = cond.cinemagraph(image, animate, 6)
    assert C.shape == (1, 3, 6, 8, 8) and M.shape == (1, 1, 6, 8, 8)
    assert (M[:, :, 0] == 1).all()  # frame 0 fully known
    assert torch.equal(M[0, 0, 1:], (1 - animate).expand(5, 8, 8))  # elsewhere known outside the region
    assert torch.equal(C[:, :, 0], image)
    assert torch.equal(C[:, :, 1:, :4], image[:, :, None, :4].expand(1, 3, 5, 4, 8))  # the image, repeated
    assert torch.count_nonzero(C[:, :, 1:, 4:]) == 0
    assert_binary(M)


def test_direct_zeroes_unknown():
    v = video()
    m = (torch.rand(1, 1, 4, 8, 8) > 0.5).float()
    C, M = cond.direct(v, m)
    assert torch.equal(M, m) and torch.equal(C, v * m)


def test_pack_gives_the_four_extra_channels():
    v = video()
    C, M = cond.image_to_video(v[:, :, 0], 4)
    x = cond.pack(v[:, :, :4].contiguous(), M)  # C is zeroed where M = 0
    assert x.shape == (1, 4, 4, 8, 8)
    assert torch.equal(x[:, :3], C) and torch.equal(x[:, 3:], M)
    with pytest.raises(ValueError, match="conditioning"):
        cond.pack(C, M[:, :, :3])


def test_batched_masks_expand():
    v = video(b=2)
    C, M = cond.inpaint(v, torch.ones(1, 1, 1, 8, 8))
    assert M.shape == (2, 1, 4, 8, 8) and torch.equal(C, v)


@pytest.mark.parametrize("call,name", [
    (lambda: cond.image_to_video(torch.rand(3, 8, 8), 4), "image"),
    (lambda: cond.image_to_video(torch.rand(1, 4, 8, 8), 4), "image"),
    (lambda: cond.image_to_video(torch.rand(1, 3, 8, 8), 0), "num_frames"),
    (lambda: cond.inpaint(torch.rand(1, 3, 8, 8), torch.ones(8, 8)), "video"),
    (lambda: cond.inpaint(torch.rand(1, 3, 4, 8, 8), torch.ones(8, 9)), "mask"),
    (lambda: cond.inpaint(torch.rand(1, 3, 4, 8, 8), torch.ones(3, 8, 8)), "mask"),
    (lambda: cond.outpaint(torch.rand(1, 1, 4, 8, 8), (0, 0, 0, 0)), "video"),
    (lambda: cond.cinemagraph(torch.rand(1, 3, 8, 8), torch.ones(4, 4), 4), "mask"),
    (lambda: cond.cinemagraph(torch.rand(1, 8, 8), torch.ones(8, 8), 4), "image"),
    (lambda: cond.cinemagraph(torch.rand(1, 3, 8, 8), torch.ones(8, 8), 0), "num_frames"),
    (lambda: cond.direct(torch.rand(1, 3, 4, 8), torch.ones(8, 8)), "conditioning video"),
])
def test_shape_errors_name_the_input(call, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        call()


def test_keyframes_and_extend_place_known_frames():
    from lumiere.conditioning import extend, keyframes
    frames = torch.rand(1, 3, 2, 4, 4) * 2 - 1
    C, M = keyframes(frames, [0, 7], 8)
    assert M[0, 0, :, 0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    assert torch.equal(C[:, :, 7], frames[:, :, 1]) and C[:, :, 1:7].abs().sum() == 0
    clip = torch.rand(1, 3, 3, 4, 4)
    C, M = extend(clip, 8)
    assert M[0, 0, :, 0, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0] and torch.equal(C[:, :, :3], clip)
    with pytest.raises(ValueError, match="indices"):
        keyframes(frames, [0, 0], 8)
    with pytest.raises(ValueError, match="indices"):
        keyframes(frames, [0, 8], 8)
    with pytest.raises(ValueError, match="clip"):
        extend(torch.rand(1, 3, 8, 4, 4), 8)


def test_outpaint_needs_a_border():
    with pytest.raises(ValueError, match=r"^pad: expected 4 non-negative sizes .*at least one above 0"):
        cond.outpaint(video(), (0, 0, 0, 0))


def test_every_task_builds_from_the_front_ends_inputs():
    """The table's recipes from one set of front-end inputs (mask 1 = generate): M = 1 exactly where each task keeps
    pixels, C zero elsewhere; a missing need is named."""
    v, t = video(t=2), 4
    generate = torch.zeros(8, 8)
    generate[:, 4:] = 1  # the right half is generated / animated
    inputs = dict(mask=generate, pad=(2, 0, 0, 0), indices=[0, -1])
    known_left = torch.zeros(8, 8)
    known_left[:, :4] = 1
    expected = {  # M per frame (h, w), for frames 0, 1, t-1 of the output
        "image_to_video": [torch.ones(8, 8), torch.zeros(8, 8), torch.zeros(8, 8)],
        "cinemagraph": [torch.ones(8, 8), known_left, known_left],
        "keyframes": [torch.ones(8, 8), torch.zeros(8, 8), torch.ones(8, 8)],
        "extend": [torch.ones(8, 8), torch.ones(8, 8), torch.zeros(8, 8)],
    }
    assert cond.build("text", None, t) == (None, None)
    for mode, task in cond.TASKS.items():
        if task.source is None:
            continue
        source = video(t=t) if task.source == "video" else v[:, :, :1] if task.source == "still" else v
        C, M = cond.build(mode, source, t, **{k: inputs[k] for k in task.needs})
        assert_binary(M)
        assert C.abs()[M.expand_as(C) == 0].sum() == 0, mode
        if task.source == "video":  # the clip's own frames, known outside what is generated
            pad = mode == "outpaint"
            assert M.shape[2:] == ((t, 8, 10) if pad else (t, 8, 8)), mode
            assert torch.equal(M[0, 0, 0], outpaint_known() if pad else known_left), mode
        else:
            assert M.shape[2:] == (t, 8, 8)
            for f, m in zip((0, 1, t - 1), expected[mode]):
                assert torch.equal(M[0, 0, f], m), (mode, f)
        for need in task.needs:
            with pytest.raises(ValueError, match=f"^{need}: expected one for {mode}, got none"):
                cond.build(mode, source, t, **{k: inputs[k] for k in task.needs if k != need})


def outpaint_known():
    m = torch.ones(8, 10)
    m[:, :2] = 0  # the 2-pixel left border is generated
    return m


def test_an_unknown_task_is_named():
    with pytest.raises(ValueError, match=r"^mode: expected one of \['text', .*got 'paint'"):
        cond.build("paint", video(), 4)
