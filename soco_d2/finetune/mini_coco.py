"""Mini-COCO splits: the first N% of a COCO instances json's images, ordered by image id.

``datasets/prepare_mini_coco.py`` writes ``instances_train2017_{5,10}pct.json`` next to
``instances_train2017.json``; ``soco_d2.data.datasets`` registers them as
``coco_2017_train_5pct`` / ``coco_2017_train_10pct`` (images stay in ``train2017/``).
"""
import json
import math
from typing import Dict

from soco_d2.utils.io import atomic_write

__all__ = ["coco_subset_first_percent", "write_coco_subset"]


def coco_subset_first_percent(coco: Dict, percent: float) -> Dict:
    """The first ``percent`` % of ``coco``'s images by id, with only their annotations.

    Args:
        coco: a COCO instances dict (``images``, ``annotations``, ``categories``, ...).
        percent: in (0, 100]; the count is ``ceil(len(images) * percent / 100)``.

    Returns:
        A new dict with every top-level key of ``coco``; ``images`` sorted by id.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    images = sorted(coco["images"], key=lambda im: im["id"])
    keep = images[: math.ceil(len(images) * percent / 100.0)]
    ids = {im["id"] for im in keep}
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = keep
    out["annotations"] = [a for a in coco.get("annotations", []) if a["image_id"] in ids]
    return out


def write_coco_subset(json_in: str, json_out: str, percent: float) -> Dict[str, int]:
    """Write the first-``percent`` subset of ``json_in`` to ``json_out`` (atomically).

    Returns:
        ``{"images": n, "annotations": m}`` of the written subset.
    """
    with open(json_in) as f:
        coco = json.load(f)
    sub = coco_subset_first_percent(coco, percent)
    with atomic_write(json_out) as f:
        json.dump(sub, f)
    return {"images": len(sub["images"]), "annotations": len(sub["annotations"])}
