"""Scale-aware assignment of boxes to FPN levels, and pooling each box at its level only.

SoCo assigns a box to a pyramid level by its size s = sqrt(w * h) in the pixels of the view it
lives in: s <= r0 -> first level (P2), s <= r1 -> second (P3), ..., anything larger -> last
level. This differs from detectron2's ``assign_boxes_to_levels`` (log2 rule around a canonical
224 px box, ``<`` at the boundaries), which is why the pooler below does its own assignment and
then calls the ``ROIPooler``'s per-level RoIAlign modules.
"""
from typing import List, Sequence

import torch
from detectron2.modeling.poolers import ROIPooler, convert_boxes_to_pooler_format
from detectron2.structures import Boxes

__all__ = ["box_sizes", "assign_boxes_to_levels_by_size", "pool_boxes_at_levels"]


def box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """sqrt(w * h) of XYXY_ABS boxes, the size SoCo's assignment uses.

    Boxes are continuous XYXY (detectron2 convention, w = x2 - x1). The official code stores
    inclusive pixel boxes (x2 = x + w - 1) and adds the 1 back, so both measure the same w.

    Args:
        boxes: (M, 4) boxes in XYXY_ABS view pixels.

    Returns:
        (M,) box sizes; degenerate boxes get 0.
    """
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).clamp(min=0)
    return (wh[:, 0] * wh[:, 1]).sqrt()


def assign_boxes_to_levels_by_size(boxes: torch.Tensor, ranges: Sequence[float]) -> torch.Tensor:
    """Level index of each box: first i with sqrt(w*h) <= ranges[i], else len(ranges).

    Args:
        boxes: (M, 4) boxes in XYXY_ABS view pixels.
        ranges: increasing upper size bounds of all levels but the last, e.g. (48, 96, 192)
            for P2, P3, P4 (P5 takes the rest).

    Returns:
        (M,) int64 level indices in [0, len(ranges)], relative to the first pooled level.
    """
    bounds = torch.as_tensor(list(ranges), dtype=boxes.dtype, device=boxes.device)
    # right=False: index i such that bounds[i-1] < s <= bounds[i]; "<=" as the official code.
    return torch.bucketize(box_sizes(boxes), bounds, right=False)


def pool_boxes_at_levels(
    pooler: ROIPooler, features: List[torch.Tensor], box_lists: List[Boxes], levels: torch.Tensor
) -> torch.Tensor:
    """RoIAlign every box once, from the feature map of its assigned level.

    Equivalent to ``ROIPooler.forward`` with SoCo's assignment instead of detectron2's: one
    RoIAlign call per level over that level's boxes, results scattered back in box order.

    Args:
        pooler: a ROIPooler whose ``level_poolers`` match ``features``.
        features: L feature maps (N, C, H_l, W_l), finest first.
        box_lists: N Boxes in image pixels (XYXY_ABS).
        levels: (M,) level index of each box, M = total boxes, in ``box_lists`` order.

    Returns:
        (M, C, R, R) pooled features.
    """
    if len(features) != len(pooler.level_poolers):
        raise ValueError(
            f"{len(features)} feature maps for a pooler of {len(pooler.level_poolers)} levels"
        )
    rois = convert_boxes_to_pooler_format(box_lists)
    if len(pooler.level_poolers) == 1:
        return pooler.level_poolers[0](features[0], rois)
    res = pooler.output_size
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], res[0], res[1]))
    for level, level_pooler in enumerate(pooler.level_poolers):
        inds = torch.nonzero(levels == level, as_tuple=True)[0]
        # index_put_ rather than advanced-index assignment, as detectron2 does (pytorch#49852).
        out.index_put_((inds,), level_pooler(features[level], rois[inds]).to(out.dtype))
    return out
