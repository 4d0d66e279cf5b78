"""SoCo's ratio3size0308 filter and its fallback chain, on hand-made boxes."""
import numpy as np

from soco_d2.data.proposals import FilterConfig, filter_boxes

W, H = 400, 100  # sqrt(W*H) = 200: size bounds 60 .. 160 (sqrt of box area)


def test_strict_rule_keeps_exactly_the_passing_boxes_inclusive_bounds():
    boxes = np.array([
        [0, 0, 60, 60],     # scale 0.3 exactly, ratio 1: kept (bounds inclusive)
        [10, 0, 170, 80],   # 160 x 80: scale 0.566, ratio 2: kept
        [0, 0, 96, 32],     # 96 x 32: ratio 3 exactly, scale 0.277: too small
        [0, 0, 320, 80],    # ratio 4: rejected
        [0, 0, 31, 100],    # side 31 < 32: rejected
        [0, 0, 180, 100],   # scale 0.67, ratio 1.8: kept
        [0, 0, 400, 100],   # scale 1.0: too big
    ], dtype=np.float32)
    kept, rule = filter_boxes(boxes, W, H)
    assert rule == "ratio3size0308"
    np.testing.assert_array_equal(kept, boxes[[0, 1, 5]])
    assert kept.dtype == np.float32


def test_fallback_to_ratio_then_min_side_then_whole_image():
    ratio_only = np.array([[0, 0, 40, 40], [0, 0, 400, 100]], np.float32)  # small / ratio 4
    kept, rule = filter_boxes(ratio_only, W, H)
    assert rule == "ratio3"
    np.testing.assert_array_equal(kept, ratio_only[:1])

    min_only = np.array([[0, 0, 200, 40], [0, 0, 10, 10]], np.float32)  # ratio 5 / tiny
    kept, rule = filter_boxes(min_only, W, H)
    assert rule == "min32"
    np.testing.assert_array_equal(kept, min_only[:1])

    kept, rule = filter_boxes(np.array([[0, 0, 10, 10]], np.float32), W, H)
    assert rule == "whole_image"
    np.testing.assert_array_equal(kept, [[0, 0, W, H]])

    kept, rule = filter_boxes(np.zeros((0, 4), np.float32), W, H)
    assert rule == "whole_image" and kept.shape == (1, 4)


def test_no_fallback_and_custom_thresholds():
    ratio_only = np.array([[0, 0, 40, 40]], np.float32)
    kept, rule = filter_boxes(ratio_only, W, H, FilterConfig(fallback=False))
    assert rule == "whole_image"
    cfg = FilterConfig(min_side=16, max_ratio=2, min_scale=0.1, max_scale=0.5)
    kept, rule = filter_boxes(np.array([[0, 0, 40, 40], [0, 0, 90, 30]], np.float32), W, H, cfg)
    assert rule == "ratio2size0105"
    np.testing.assert_array_equal(kept, [[0, 0, 40, 40]])
