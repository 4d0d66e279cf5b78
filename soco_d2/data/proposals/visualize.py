"""Draw cached proposals on their images (for eyeballing a cache)."""
import os
from typing import List, Optional, Sequence

import cv2
import numpy as np

from .cache import ProposalCache
from .images import BadImageError, load_image

__all__ = ["draw_boxes", "visualize_cache"]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, label: str = "") -> np.ndarray:
    """Copy of a BGR image (h, w, 3) with (N, 4) XYXY boxes (in its pixels) drawn."""
    out = image.copy()
    rng = np.random.default_rng(0)  # same colours for the same box order
    for x1, y1, x2, y2 in np.round(boxes).astype(int):
        color = tuple(int(c) for c in rng.integers(64, 256, 3))
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), color, 2)
    if label:
        cv2.putText(out, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(out, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


def visualize_cache(
    cache_path: str,
    image_root: str,
    out_dir: str,
    keys: Optional[Sequence[str]] = None,
    num: int = 20,
    max_side: int = 640,
) -> List[str]:
    """Write ``<out_dir>/<key with / -> __>.png`` for the given keys (default: the first
    ``num``); returns the written paths. Images that cannot be read are skipped."""
    cache = ProposalCache(cache_path)
    keys = list(keys) if keys else cache.keys()[: num if num > 0 else None]
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key in keys:
        boxes = cache.find(key)
        try:
            img = load_image(os.path.join(image_root, key), max_side)
        except BadImageError:
            continue
        h, w = img.image.shape[:2]
        scale = np.array([w / img.width, h / img.height] * 2, np.float32)
        info = cache.info_at(cache.find_index(key))
        canvas = draw_boxes(img.image, boxes * scale, f"{len(boxes)} boxes, {info['rule']}")
        path = os.path.join(out_dir, key.replace("/", "__").rsplit(".", 1)[0] + ".png")
        cv2.imwrite(path, canvas)
        written.append(path)
    return written
