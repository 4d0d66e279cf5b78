"""Conversions between the cache, the official SoCo JSON and detectron2's proposal pickle.

Official SoCo JSON: ``{image basename stem: [[x, y, w, h], ...]}`` read back as
``x2 = x + w - 1, y2 = y + h - 1``; the authors publish theirs for ImageNet.
Detectron2 proposal file: a pickle with ``ids``, ``boxes``, ``objectness_logits`` and
``bbox_mode`` for ``DATASETS.PROPOSAL_FILES_*`` (``load_proposals_into_dataset``).
"""
import json
import os
import pickle
from typing import Dict

import numpy as np

from ...utils.io import atomic_write
from .cache import ProposalCache, key_stem, write_cache

__all__ = ["import_official_json", "export_official_json", "export_detectron2_proposals",
           "convert_proposals"]

IMPORTED_RULE = "imported"


def official_to_xyxy(rects) -> np.ndarray:
    """[[x, y, w, h], ...] (official convention) -> (N, 4) float64 XYXY, x2 = x + w - 1."""
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:] - 1], axis=1)


def xyxy_to_official(boxes: np.ndarray) -> list:
    """(N, 4) XYXY -> [[x, y, w, h], ...] with w = x2 - x1 + 1 (integers when integral)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    r = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2] + 1], axis=1)
    if np.array_equal(r, np.round(r)):
        return r.astype(np.int64).tolist()
    return r.tolist()


def import_official_json(json_path: str, cache_path: str) -> int:
    """Official SoCo JSON -> cache. Keys stay the JSON's keys (basename stems, which
    :meth:`ProposalCache.find` matches against image paths); width and height are unknown
    and stored as 0; the rule is ``"imported"``. Returns the number of images."""
    with open(json_path, "r") as f:
        data: Dict[str, list] = json.load(f)
    entries = {str(k): dict(boxes=official_to_xyxy(v), width=0, height=0, rule=IMPORTED_RULE)
               for k, v in data.items()}
    meta = {"source": "official_json", "file": os.path.abspath(json_path)}
    write_cache(cache_path, entries, meta)
    return len(entries)


def export_official_json(cache_path: str, json_path: str) -> int:
    """Cache -> official SoCo JSON keyed by basename stems (an error if two keys share one).
    Returns the number of images."""
    cache = ProposalCache(cache_path)
    out: Dict[str, list] = {}
    for i, key in enumerate(cache.keys()):
        stem = key_stem(key)
        if stem in out:
            raise ValueError(f"two images share the basename {stem!r}; the official JSON "
                             "format cannot hold both")
        out[stem] = xyxy_to_official(cache.boxes_at(i))
    with atomic_write(json_path, "wb") as f:
        f.write(json.dumps(out).encode("utf-8"))
    return len(out)


def export_detectron2_proposals(cache_path: str, pkl_path: str) -> int:
    """Cache -> detectron2 precomputed-proposal pickle.

    ``ids`` are the cache keys (``str(image_id)`` for caches made from a registered detectron2
    dataset, which is what ``load_proposals_into_dataset`` matches). Selective search has no
    score, so ``objectness_logits`` decrease with the stored order; detectron2's sort keeps it.
    Returns the number of images.
    """
    from detectron2.structures import BoxMode

    cache = ProposalCache(cache_path)
    ids, boxes, logits = [], [], []
    for i, key in enumerate(cache.keys()):
        b = cache.boxes_at(i)
        ids.append(key)
        boxes.append(b)
        logits.append(-np.arange(len(b), dtype=np.float32))
    payload = {"ids": ids, "boxes": boxes, "objectness_logits": logits,
               "bbox_mode": int(BoxMode.XYXY_ABS)}
    with atomic_write(pkl_path, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    return len(ids)


def convert_proposals(src: str, dst: str) -> int:
    """Convert by extension: ``.json`` (official) and cache (any other extension) in;
    cache, ``.json`` or ``.pkl`` (detectron2) out. Returns the number of images."""
    src_ext, dst_ext = os.path.splitext(src)[1].lower(), os.path.splitext(dst)[1].lower()
    if src_ext == ".pkl":
        raise ValueError("reading detectron2 proposal pickles is not supported (export only)")
    if src_ext == ".json":
        if dst_ext == ".json":
            raise ValueError("JSON to JSON: nothing to convert")
        if dst_ext != ".pkl":
            return import_official_json(src, dst)
        tmp = f"{dst}.cache.tmp{os.getpid()}"
        try:
            import_official_json(src, tmp)
            return export_detectron2_proposals(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    if dst_ext == ".json":
        return export_official_json(src, dst)
    if dst_ext == ".pkl":
        return export_detectron2_proposals(src, dst)
    cache = ProposalCache(src)  # cache -> cache: a verified, rewritten copy
    write_cache(dst, cache.entries(), cache.meta)
    return len(cache)
