"""Selective search on one image (OpenCV ``ximgproc``), boxes mapped back to original pixels.

SoCo keeps only boxes of at least 0.3 of the image's sqrt-area and views are 224 px, so the
search runs on a copy whose longer side is at most ``max_size``; see the README table for the
speed/recall trade-off that chose the default.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import cv2
import numpy as np

from .filters import FilterConfig, filter_boxes, whole_image_box
from .images import MIN_SIDE, BadImageError, load_image

__all__ = ["MODES", "DEFAULT_MAX_SIZE", "DEFAULT_MODE", "search_boxes", "propose_image",
           "ImageResult"]

MODES = ("single", "dual", "fast", "quality")
DEFAULT_MODE = "dual"
DEFAULT_MAX_SIZE = 160
# Felzenszwalb k of the "dual" mode's two single strategies: fine and coarse segmentations.
DUAL_KS = (100, 200)

_SEGMENTER = None


def _segmenter():
    # One segmenter per process: creation is cheap, but reusing it avoids re-allocations.
    global _SEGMENTER
    if _SEGMENTER is None:
        _SEGMENTER = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    return _SEGMENTER


def search_boxes(image: np.ndarray, mode: str = DEFAULT_MODE) -> np.ndarray:
    """Raw selective-search boxes of one image.

    Args:
        image: (h, w, 3) uint8 BGR.
        mode: "single" (one strategy: HSV colour, fill+size+colour+texture, k=200),
            "dual" (that strategy at k=100 and k=200, boxes pooled: ~2x the time of single,
            better recall, the default), "fast" (OpenCV's fast diversification, 8 strategies)
            or "quality" (its quality one).

    Returns:
        (N, 4) float32 unique XYXY_ABS boxes in ``image`` pixels, sorted lexicographically.
        OpenCV ranks regions with a random factor, so only the set of boxes is reproducible;
        sorting makes the output identical run to run.
    """
    if mode not in MODES:
        raise ValueError(f"unknown selective search mode {mode!r}; expected one of {MODES}")
    ss = _segmenter()
    ss.setBaseImage(image)
    if mode in ("single", "dual"):
        found = []
        for k in DUAL_KS if mode == "dual" else (200,):
            ss.switchToSingleStrategy(k)
            found.append(np.asarray(ss.process(), dtype=np.int64).reshape(-1, 4))
        rects = np.concatenate(found)
    else:
        if mode == "fast":
            ss.switchToSelectiveSearchFast()
        else:
            ss.switchToSelectiveSearchQuality()
        rects = np.asarray(ss.process(), dtype=np.int64).reshape(-1, 4)
    ss.clearImages()
    ss.clearStrategies()
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    boxes = np.unique(boxes, axis=0)  # unique() also sorts rows lexicographically
    return boxes.astype(np.float32)


@dataclass
class ImageResult:
    """Proposals of one image, or why it has none.

    Attributes:
        boxes: (M, 4) float32 XYXY_ABS in original pixels (M >= 1), None if ``error``.
        rule: filter rule the boxes come from.
        width, height: original image size.
        raw: number of boxes before filtering.
        raw_boxes: those boxes, (raw, 4) float32 in original pixels (not stored in caches).
        notes: conversions applied while reading (reported, not fatal).
        error: reason the file was skipped, else None.
    """

    boxes: Optional[np.ndarray] = None
    rule: str = ""
    width: int = 0
    height: int = 0
    raw: int = 0
    notes: List[str] = field(default_factory=list)
    error: Optional[str] = None
    raw_boxes: Optional[np.ndarray] = None


def propose_image(
    path: str,
    max_size: int = DEFAULT_MAX_SIZE,
    mode: str = DEFAULT_MODE,
    filter_cfg: FilterConfig = FilterConfig(),
) -> ImageResult:
    """Read, search and filter one image; never raises for a bad file.

    Args:
        path: image file.
        max_size: longer side of the searched copy (<= 0: full resolution).
        mode: see :func:`search_boxes`.
        filter_cfg: filter thresholds.

    Returns:
        ImageResult; ``error`` is set (and ``boxes`` None) when the file gives no pixels.
    """
    try:
        img = load_image(path, max_size)
    except BadImageError as e:
        return ImageResult(error=str(e))
    except Exception as e:  # anything unforeseen in a decoder is still one bad file
        return ImageResult(error=f"read failed: {type(e).__name__}: {e}")
    W, H = img.width, img.height
    if min(W, H) < MIN_SIDE:
        return ImageResult(whole_image_box(W, H), "whole_image", W, H, 0, img.notes)
    try:
        boxes = search_boxes(img.image, mode)
    except cv2.error as e:
        return ImageResult(error=f"selective search failed: {e}")
    h, w = img.image.shape[:2]
    boxes *= np.array([W / w, H / h, W / w, H / h], dtype=np.float32)
    # Whole pixels: the cache stores integers, and rounding here keeps every path identical.
    boxes = np.unique(np.round(np.clip(boxes, 0, [W, H, W, H])), axis=0)
    kept, rule = filter_boxes(boxes, W, H, filter_cfg)
    return ImageResult(kept, rule, W, H, len(boxes), img.notes, raw_boxes=boxes)
