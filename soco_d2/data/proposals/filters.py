"""SoCo's proposal filter ``ratio3size0308`` and its fallback chain.

The official pipeline keeps a box when both sides are at least 32 px, its aspect ratio is
within [1/3, 3] and sqrt(box area) / sqrt(image area) is within [0.3, 0.8] (all bounds
inclusive). An image left with no box falls back to the aspect-ratio rule alone, then to the
32 px rule alone; here one more step falls back to the whole image, so every image has at least
one box. The rule an image ended with is stored with its boxes.

Sides are measured as ``x2 - x1`` of XYXY_ABS boxes (the official code measured max - min of
pixel indices, one less; the difference is one pixel at a 32 px threshold).
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np

__all__ = ["FilterConfig", "filter_boxes", "rule_name", "whole_image_box"]


@dataclass(frozen=True)
class FilterConfig:
    """Filter thresholds; the defaults are SoCo's ``ratio3size0308``.

    Attributes:
        min_side: minimum box width and height in original-image pixels.
        max_ratio: aspect ratio bound r: 1/r <= w/h <= r.
        min_scale, max_scale: bounds on sqrt(w*h) / sqrt(W*H).
        fallback: if False, an image whose boxes all fail goes straight to the whole image.
    """

    min_side: float = 32.0
    max_ratio: float = 3.0
    min_scale: float = 0.3
    max_scale: float = 0.8
    fallback: bool = True


def rule_name(cfg: FilterConfig) -> Tuple[str, str, str]:
    """Names of the three box rules of ``cfg``, strictest first (SoCo's naming scheme)."""
    r = f"{cfg.max_ratio:g}"
    full = f"ratio{r}size{int(round(cfg.min_scale * 10)):02d}{int(round(cfg.max_scale * 10)):02d}"
    if (cfg.min_scale * 10) % 1 or (cfg.max_scale * 10) % 1:
        full = f"ratio{r}size{cfg.min_scale:g}-{cfg.max_scale:g}"
    return full, f"ratio{r}", f"min{cfg.min_side:g}"


def filter_boxes(
    boxes: np.ndarray, width: int, height: int, cfg: FilterConfig = FilterConfig()
) -> Tuple[np.ndarray, str]:
    """Apply the filter and its fallback chain to one image's proposals.

    Args:
        boxes: (N, 4) XYXY_ABS boxes in original-image pixels (any float/int dtype).
        width, height: original image size W, H.
        cfg: thresholds.

    Returns:
        (M, 4) float32 kept boxes (M >= 1, input order preserved) and the name of the rule
        that produced them (one of :func:`rule_name` or ``"whole_image"``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    big = (w >= cfg.min_side) & (h >= cfg.min_side)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = w / h
        scale = np.sqrt(w * h) / np.sqrt(float(width) * float(height))
    ratio_ok = big & (aspect >= 1.0 / cfg.max_ratio) & (aspect <= cfg.max_ratio)
    size_ok = ratio_ok & (scale >= cfg.min_scale) & (scale <= cfg.max_scale)
    names = rule_name(cfg)
    chain = [(size_ok, names[0])]
    if cfg.fallback:
        chain += [(ratio_ok, names[1]), (big, names[2])]
    for keep, name in chain:
        if keep.any():
            return boxes[keep].astype(np.float32), name
    return whole_image_box(width, height), "whole_image"


def whole_image_box(width: int, height: int) -> np.ndarray:
    """(1, 4) float32 box covering the whole image, XYXY_ABS."""
    return np.array([[0.0, 0.0, float(width), float(height)]], dtype=np.float32)
