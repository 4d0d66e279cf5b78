"""Which proposals a SoCo sample uses, and the box-level augmentations.

Facts of the official code (hologerry/SoCo ``contrast/data/dataset.py``, ``bboxs_utils.py``)
that the paper does not spell out, followed here:

- A proposal counts as overlapping when its intersection with the views' common region has
  positive area; it need not lie inside. With integer boxes the official strict inequalities
  mean at least one pixel of overlap, which is the ``min_overlap=1`` used here.
- Crops are redrawn while fewer than ``max(K // 2, 1)`` proposals overlap, that threshold
  halving after every failed draw, for at most ``max_tries`` draws; the last draw is kept.
- K proposals are drawn without replacement; with fewer, all are kept and the list is padded
  with random duplicates (with replacement) of the kept ones.
- If nothing overlaps after the last draw, every view uses its whole self as the one box.
- Box jitter acts on V1's boxes in original pixels before clipping: x1 += U(-a, a) w,
  y1 += U(-a, a) h, w *= 1 + U(-a, a), h *= 1 + U(-a, a), each box with probability p.
- Boxes are clipped to each view; small clipped boxes are not dropped.
- Cutout (views after V1): per box with probability p, a square of side
  round(sqrt(U(s0, s1) * box area)) centred on a uniform point of the box, clamped to the
  view, is filled with the mean colour (the official code zeroes the normalized image).

One deliberate difference: the official code draws one set of K proposals per view pair
((V1, V2) and (V1, V3), each overlapping that pair) and pads each view independently; here one
set of K proposals serves every view (the mapper's output: row k of every view is the same proposal), so
proposals must overlap all views' common region.
"""

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "common_region",
    "overlapping_indices",
    "choose_k",
    "draw_views_with_proposals",
    "jitter_boxes",
    "cutout_in_boxes",
]


def common_region(regions: Sequence[np.ndarray]) -> Optional[np.ndarray]:
    """Intersection of XYXY regions, or None if it is empty.

    Args:
        regions: list of (4,) XYXY arrays.

    Returns:
        (4,) float32 XYXY, or None.
    """
    r = np.stack([np.asarray(x, dtype=np.float32) for x in regions])
    out = np.concatenate([r[:, :2].max(axis=0), r[:, 2:].min(axis=0)])
    if out[2] <= out[0] or out[3] <= out[1]:
        return None
    return out


def overlapping_indices(
    boxes: np.ndarray, region: Optional[np.ndarray], min_overlap: float = 1.0
) -> np.ndarray:
    """Indices of boxes meeting ``region`` over at least ``min_overlap`` pixels in x and in y.

    Args:
        boxes: (N, 4) XYXY.
        region: (4,) XYXY, or None (nothing overlaps).
        min_overlap: minimum intersection side in pixels.

    Returns:
        (M,) int64 indices into ``boxes``.
    """
    if region is None or len(boxes) == 0:
        return np.zeros((0,), dtype=np.int64)
    iw = np.minimum(boxes[:, 2], region[2]) - np.maximum(boxes[:, 0], region[0])
    ih = np.minimum(boxes[:, 3], region[3]) - np.maximum(boxes[:, 1], region[1])
    return np.nonzero((iw >= min_overlap) & (ih >= min_overlap))[0]


def choose_k(candidates: np.ndarray, k: int) -> np.ndarray:
    """K of ``candidates`` without replacement; fewer are all kept and padded by duplicates.

    Args:
        candidates: (M,) indices, M >= 1.
        k: how many to return.

    Returns:
        (k,) indices; the first ``min(M, k)`` are distinct.
    """
    if len(candidates) == 0:
        raise ValueError("choose_k() needs at least one candidate")
    if len(candidates) >= k:
        return candidates[np.random.choice(len(candidates), size=k, replace=False)]
    pad = candidates[np.random.randint(0, len(candidates), size=k - len(candidates))]
    return np.concatenate([candidates, pad])


def draw_views_with_proposals(
    draw_regions: Callable[[], Tuple[object, List[np.ndarray]]],
    proposals: np.ndarray,
    k: int,
    max_tries: int,
    min_overlap: float = 1.0,
) -> Tuple[object, Optional[np.ndarray]]:
    """Draw views until enough proposals overlap all of them, then pick K.

    Args:
        draw_regions: draws the views once; returns ``(anything, regions)`` where ``regions``
            are the views' (4,) XYXY regions in original pixels.
        proposals: (N, 4) XYXY original pixels.
        k: proposals per image.
        max_tries: draws at most (at least one draw is made).
        min_overlap: see ``overlapping_indices``.

    Returns:
        (draw, indices): the kept draw, and (k,) proposal indices, or None when no proposal
        overlaps (the caller then uses each view's whole extent as the single box).
    """
    need = max(k // 2, 1)
    for _ in range(max(int(max_tries), 1)):
        draw, regions = draw_regions()
        candidates = overlapping_indices(proposals, common_region(regions), min_overlap)
        if len(candidates) >= need:
            break
        need = max(need // 2, 1)
    if len(candidates) == 0:
        return draw, None
    return draw, choose_k(candidates, k)


def jitter_boxes(
    boxes: np.ndarray, prob: float, ratio: float, width: int, height: int
) -> np.ndarray:
    """Jitter each box with probability ``prob`` and clip to the image.

    Args:
        boxes: (K, 4) XYXY original pixels (not modified).
        prob: per-box probability.
        ratio: jitter magnitude ``a`` (shift U(-a, a) * size, scale 1 + U(-a, a)).
        width, height: image size to clip to.

    Returns:
        (K, 4) float32 XYXY, each at least 1 px wide and high, inside the image.
    """
    out = boxes.astype(np.float32, copy=True)
    if len(out) == 0 or prob <= 0 or ratio <= 0:
        return out
    w = out[:, 2] - out[:, 0]
    h = out[:, 3] - out[:, 1]
    j = np.random.uniform(-ratio, ratio, size=(len(out), 4)).astype(np.float32)
    on = np.random.rand(len(out)) < prob
    x1 = out[:, 0] + j[:, 0] * w
    y1 = out[:, 1] + j[:, 1] * h
    jittered = np.stack([x1, y1, x1 + w * (1 + j[:, 2]), y1 + h * (1 + j[:, 3])], axis=1)
    out[on] = jittered[on]
    return clip_boxes(out, width, height)


def clip_boxes(boxes: np.ndarray, width: float, height: float, min_size: float = 1.0) -> np.ndarray:
    """Clip XYXY boxes to ``[0, width] x [0, height]`` keeping each at least ``min_size`` a side.

    A box pushed (almost) outside keeps a ``min_size`` sliver at the border it crossed, so a
    row never becomes empty (ROIAlign would pool nothing from it).

    Args:
        boxes: (K, 4) XYXY.
        width, height: extent to clip to (>= min_size).

    Returns:
        (K, 4) float32.
    """
    out = boxes.astype(np.float32, copy=True)
    for lo, hi, extent in ((0, 2, width), (1, 3, height)):
        a = np.clip(out[:, lo], 0, extent - min_size)
        b = np.clip(out[:, hi], min_size, extent)
        b = np.maximum(b, a + min_size)
        out[:, lo], out[:, hi] = a, b
    return out


def cutout_in_boxes(
    img: np.ndarray,
    boxes: np.ndarray,
    prob: float,
    scale: Sequence[float],
    fill: Sequence[float],
) -> np.ndarray:
    """Fill a random square inside each box (with probability ``prob``) with ``fill``.

    Args:
        img: (H, W, C) uint8 view, modified in place.
        boxes: (K, 4) XYXY in the view's pixels.
        prob: per-box probability.
        scale: range of the square's area as a fraction of the box area.
        fill: per-channel fill value (the pixel mean, so the normalized value is 0).

    Returns:
        ``img``.
    """
    if prob <= 0:
        return img
    h_img, w_img = img.shape[:2]
    fill_px = np.asarray(fill, dtype=np.float32).round().clip(0, 255).astype(np.uint8)
    for x1, y1, x2, y2 in boxes:
        if np.random.rand() >= prob:
            continue
        area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
        half = int(round(np.sqrt(np.random.uniform(scale[0], scale[1]) * area))) // 2
        cx = np.random.uniform(x1, x2)
        cy = np.random.uniform(y1, y2)
        xa, xb = max(int(cx) - half, 0), min(int(cx) + half + 1, w_img)
        ya, yb = max(int(cy) - half, 0), min(int(cy) + half + 1, h_img)
        if xb > xa and yb > ya:
            img[ya:yb, xa:xb] = fill_px
    return img
