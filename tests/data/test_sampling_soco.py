"""Proposal selection edge cases, jitter and cutout of soco_d2.data.sampling."""

import numpy as np
import pytest

from soco_d2.data.sampling import (
    choose_k,
    clip_boxes,
    common_region,
    cutout_in_boxes,
    draw_views_with_proposals,
    jitter_boxes,
    overlapping_indices,
)

REGION = np.array([10, 10, 50, 50], np.float32)


def _fixed_draw(regions, counter=None):
    def draw():
        if counter is not None:
            counter.append(1)
        return "draw", [np.asarray(r, np.float32) for r in regions]

    return draw


def test_common_region_and_overlap():
    assert common_region([np.array([0, 0, 10, 10]), np.array([20, 20, 30, 30])]) is None
    np.testing.assert_allclose(
        common_region([np.array([0, 0, 30, 30]), np.array([10, 5, 40, 20])]), [10, 5, 30, 20]
    )
    boxes = np.array(
        [[0, 0, 11, 11], [0, 0, 10.5, 60], [49.5, 0, 60, 60], [20, 20, 30, 30], [60, 60, 70, 70]],
        np.float32,
    )
    # Partial overlap counts (official); less than 1 px of overlap does not.
    assert overlapping_indices(boxes, REGION).tolist() == [0, 3]
    assert overlapping_indices(boxes, None).tolist() == []


def test_choose_k_without_replacement_then_duplicates():
    for _ in range(20):
        picked = choose_k(np.arange(10), 4)
        assert len(set(picked.tolist())) == 4 and set(picked.tolist()) <= set(range(10))
    few = choose_k(np.array([3, 7]), 4)
    assert few[:2].tolist() == [3, 7] and set(few.tolist()) == {3, 7}
    one = choose_k(np.array([5]), 4)
    assert one.tolist() == [5, 5, 5, 5]
    with pytest.raises(ValueError):
        choose_k(np.zeros((0,), np.int64), 4)


def test_draw_zero_proposals_returns_none_after_all_tries():
    calls = []
    _, idx = draw_views_with_proposals(
        _fixed_draw([REGION], calls), np.zeros((0, 4), np.float32), 4, 5
    )
    assert idx is None and len(calls) == 5


def test_draw_none_overlapping_returns_none():
    props = np.array([[60, 60, 80, 80]], np.float32)
    _, idx = draw_views_with_proposals(_fixed_draw([[0, 0, 100, 100], REGION]), props, 4, 3)
    assert idx is None


def test_draw_one_and_fewer_than_k():
    one = np.array([[20, 20, 30, 30]], np.float32)
    _, idx = draw_views_with_proposals(_fixed_draw([REGION]), one, 4, 5)
    assert idx.tolist() == [0, 0, 0, 0]
    three = np.array(
        [[20, 20, 30, 30], [0, 0, 15, 15], [45, 45, 70, 70], [80, 80, 90, 90]], np.float32
    )
    _, idx = draw_views_with_proposals(_fixed_draw([REGION]), three, 4, 5)
    assert len(idx) == 4 and set(idx.tolist()) == {0, 1, 2}  # box 3 never overlaps
    assert len(set(idx[:3].tolist())) == 3


def test_redraw_stops_when_enough_overlap_and_threshold_halves():
    props = np.array([[20, 20, 30, 30]], np.float32)
    regions = iter([[[60, 60, 90, 90]], [REGION], [REGION]])
    calls = []

    def draw():
        calls.append(1)
        return len(calls), [np.asarray(r, np.float32) for r in next(regions)]

    # K = 4: first draw needs 2 (gets 0), second needs 1 (gets 1) -> stop at draw 2.
    kept, idx = draw_views_with_proposals(draw, props, 4, 5)
    assert kept == 2 and len(calls) == 2 and idx.tolist() == [0, 0, 0, 0]


def test_overlap_must_hold_for_every_view():
    props = np.array([[0, 0, 20, 20], [70, 70, 90, 90]], np.float32)
    # Views [0, 50] and [40, 100] share [40, 50]: neither proposal reaches it.
    _, idx = draw_views_with_proposals(
        _fixed_draw([[0, 0, 50, 50], [40, 40, 100, 100]]), props, 4, 2
    )
    assert idx is None


def test_jittered_boxes_stay_inside_image():
    rng = np.random.RandomState(0)
    x1 = rng.uniform(0, 60, 200)
    y1 = rng.uniform(0, 40, 200)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, 64 - x1), y1 + rng.uniform(1, 48 - y1)], 1)
    boxes[:4] = [[0, 0, 64, 48], [0, 0, 1, 1], [63, 47, 64, 48], [0, 20, 64, 21]]  # borders
    out = jitter_boxes(boxes.astype(np.float32), 1.0, 0.1, 64, 48)
    assert out.dtype == np.float32 and out.shape == boxes.shape
    assert (out[:, 0] >= 0).all() and (out[:, 1] >= 0).all()
    assert (out[:, 2] <= 64).all() and (out[:, 3] <= 48).all()
    assert (out[:, 2] - out[:, 0] >= 1 - 1e-5).all() and (out[:, 3] - out[:, 1] >= 1 - 1e-5).all()
    assert not np.allclose(out, boxes)  # it did jitter
    # Magnitude: centre shift at most ~0.15 of the size (0.1 shift + 0.05 from scaling).
    inner = slice(4, None)
    w = boxes[inner, 2] - boxes[inner, 0]
    shift = np.abs(out[inner, 0] - boxes[inner, 0])
    unclipped = out[inner, 0] > 0
    assert (shift[unclipped] <= 0.1 * w[unclipped] + 1e-4).all()


def test_jitter_probability_zero_is_identity():
    boxes = np.array([[1, 2, 30, 40]], np.float32)
    np.testing.assert_array_equal(jitter_boxes(boxes, 0.0, 0.1, 64, 48), boxes)


def test_clip_boxes_keeps_slivers():
    out = clip_boxes(np.array([[-10, -5, -2, 3], [60, 10, 80, 20]], np.float32), 64, 48)
    np.testing.assert_allclose(out, [[0, 0, 1, 3], [60, 10, 64, 20]])


def test_cutout_stays_inside_box_and_uses_fill():
    img = np.full((64, 64, 3), 200, np.uint8)
    box = np.array([[16, 16, 48, 48]], np.float32)
    for _ in range(10):
        out = cutout_in_boxes(img.copy(), box, 1.0, (0.1, 0.3), (10, 20, 30))
        changed = (out != 200).any(axis=2)
        ys, xs = np.nonzero(changed)
        assert len(ys) > 0
        # Square centred inside the box, side <= sqrt(0.3) * 32 + 1, so it stays near it.
        assert (
            xs.min() >= 16 - 9 and xs.max() <= 48 + 9 and ys.min() >= 16 - 9 and ys.max() <= 48 + 9
        )
        assert (out[changed] == [10, 20, 30]).all()
        assert changed.sum() <= (int(np.sqrt(0.3 * 32 * 32)) + 1) ** 2
    untouched = cutout_in_boxes(img.copy(), box, 0.0, (0.1, 0.3), (0, 0, 0))
    assert (untouched == 200).all()
