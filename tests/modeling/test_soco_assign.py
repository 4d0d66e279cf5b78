"""Scale-aware level assignment and pooling each box at its level only."""
import pytest
import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes

from soco_d2.modeling.soco.assign import (
    assign_boxes_to_levels_by_size,
    box_sizes,
    pool_boxes_at_levels,
)


def _squares(sides):
    s = torch.tensor(sides, dtype=torch.float32)
    return torch.stack([torch.zeros_like(s) + 3, torch.zeros_like(s) + 5, s + 3, s + 5], dim=1)


def test_boundaries_follow_official_less_or_equal_rule():
    sides = [1, 47, 48, 49, 95, 96, 97, 191, 192, 193, 224, 500]
    levels = assign_boxes_to_levels_by_size(_squares(sides), [48, 96, 192])
    assert levels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_size_is_sqrt_of_area_not_longest_side():
    # 24 x 96 has sqrt(area) 48 -> P2; 24 x 97 just above -> P3.
    boxes = torch.tensor([[0.0, 0.0, 24.0, 96.0], [10.0, 10.0, 34.0, 107.0]])
    assert torch.allclose(box_sizes(boxes), torch.tensor([48.0, (24 * 97) ** 0.5]))
    assert assign_boxes_to_levels_by_size(boxes, [48, 96, 192]).tolist() == [0, 1]


def test_configurable_ranges_and_degenerate_boxes():
    boxes = torch.cat([_squares([10, 20, 30]), torch.tensor([[5.0, 5.0, 5.0, 9.0]])])
    assert assign_boxes_to_levels_by_size(boxes, [15, 25]).tolist() == [0, 1, 2, 0]


def test_each_box_is_pooled_from_its_level_only():
    pooler = ROIPooler(7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=0,
                       pooler_type="ROIAlignV2")
    # Level l is the constant l + 1: the pooled value tells which map a box was read from.
    feats = [torch.full((2, 3, 64 // 2**l, 64 // 2**l), float(l + 1)) for l in range(4)]
    boxes = [Boxes(_squares([10, 20, 30, 40])), Boxes(_squares([50, 15, 25, 35]))]
    levels = torch.tensor([0, 1, 2, 3, 3, 0, 1, 2])
    out = pool_boxes_at_levels(pooler, feats, boxes, levels)
    assert out.shape == (8, 3, 7, 7)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), (levels + 1).float())


def test_pooling_matches_per_box_roialign_on_random_features():
    torch.manual_seed(0)
    pooler = ROIPooler(7, scales=(1 / 4, 1 / 8), sampling_ratio=0, pooler_type="ROIAlignV2")
    feats = [torch.randn(2, 4, 16, 16), torch.randn(2, 4, 8, 8)]
    boxes = [Boxes(_squares([10, 30])), Boxes(_squares([20, 40]))]
    levels = assign_boxes_to_levels_by_size(torch.cat([b.tensor for b in boxes]), [25])
    out = pool_boxes_at_levels(pooler, feats, boxes, levels)
    for m, (img, lvl) in enumerate(zip([0, 0, 1, 1], levels.tolist())):
        xyxy = torch.cat([b.tensor for b in boxes])[m:m + 1]
        box = torch.cat([torch.tensor([[float(img)]]), xyxy], dim=1)
        assert torch.allclose(out[m], pooler.level_poolers[lvl](feats[lvl], box)[0], atol=1e-6)


def test_level_count_mismatch_is_a_clear_error():
    pooler = ROIPooler(7, scales=(1 / 4, 1 / 8), sampling_ratio=0, pooler_type="ROIAlignV2")
    with pytest.raises(ValueError, match="feature maps"):
        pool_boxes_at_levels(pooler, [torch.zeros(1, 1, 8, 8)], [Boxes(_squares([4]))],
                             torch.zeros(1, dtype=torch.long))
