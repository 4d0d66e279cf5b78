"""Proposal benchmark: speed per core, kept boxes, ground-truth recall, vs the official search.

Every configuration runs on every image in turn (round robin, one process, one thread), so
all timings share the same machine load and their ratios are meaningful on a busy machine.
The official pipeline is AlpacaDB's pure-Python selective search (PyPI ``selectivesearch``)
with SoCo's settings (scale 300, sigma 0.9, min_size 100, full resolution, texture histogram
over 0-255); it is measured when that package is importable.
"""
import json
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .filters import FilterConfig, filter_boxes
from .search import propose_image

__all__ = ["load_coco_boxes", "official_search", "benchmark", "format_table", "box_recall"]


def load_coco_boxes(
    json_path: str, image_root: str, limit: int = 0
) -> List[Tuple[str, np.ndarray]]:
    """(image path, (G, 4) XYXY ground-truth boxes) of a COCO-format set, images with boxes
    only, in image-id order."""
    import os

    with open(json_path) as f:
        coco = json.load(f)
    boxes: Dict[int, list] = defaultdict(list)
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            x, y, w, h = ann["bbox"]
            boxes[ann["image_id"]].append([x, y, x + w, y + h])
    out = [(os.path.join(image_root, im["file_name"]), np.array(boxes[im["id"]], np.float64))
           for im in sorted(coco["images"], key=lambda im: im["id"]) if boxes.get(im["id"])]
    return out[:limit] if limit > 0 else out


def box_recall(gt: np.ndarray, proposals: np.ndarray, thresholds: Sequence[float]) -> List[int]:
    """Number of ground-truth boxes (G, 4) covered by a proposal (N, 4) at IoU >= each
    threshold (XYXY)."""
    if proposals is None or len(gt) == 0 or len(proposals) == 0:
        return [0 for _ in thresholds]
    lt = np.maximum(gt[:, None, :2], proposals[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], proposals[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(gt)[:, None] + area(proposals)[None, :] - inter)
    best = iou.max(axis=1)
    return [int((best >= t).sum()) for t in thresholds]


def _soco_sized(path: str, gt: np.ndarray) -> np.ndarray:
    """Ground-truth boxes that SoCo's strict rule (ratio3size0308) would keep."""
    if len(gt) == 0:
        return gt
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    cfg = FilterConfig(fallback=False)
    kept, rule = filter_boxes(gt, w, h, cfg)
    return kept.astype(np.float64) if rule != "whole_image" else gt[:0]


_OFFICIAL = None


def official_search():
    """The official search function (image RGB uint8 -> (N, 4) XYXY boxes) or None."""
    global _OFFICIAL
    if _OFFICIAL is None:
        try:
            import selectivesearch.selectivesearch as ss_mod
        except ImportError:
            return None

        class _NumpyTextureFix:
            # SoCo's copy bins the texture (LBP) histogram over 0-255; the package over 0-1.
            def __getattr__(self, name):
                return getattr(np, name)

            @staticmethod
            def histogram(a, bins=10, range=None, **kw):
                if range == (0.0, 1.0):
                    range = (0.0, 255.0)
                return np.histogram(a, bins, range, **kw)

        ss_mod.numpy = _NumpyTextureFix()

        def run(rgb: np.ndarray) -> np.ndarray:
            _, regions = ss_mod.selective_search(rgb, scale=300, sigma=0.9, min_size=100)
            # rect = (min_x, min_y, max_x - min_x, max_y - min_y) of pixel indices
            r = np.array([reg["rect"] for reg in regions], np.float64).reshape(-1, 4)
            return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:] + 1], axis=1)

        _OFFICIAL = run
    return _OFFICIAL


def benchmark(
    samples: List[Tuple[str, np.ndarray]],
    configs: Sequence[Tuple[str, int]],
    with_official: bool = True,
    thresholds: Sequence[float] = (0.5, 0.7),
) -> List[dict]:
    """Measure each (mode, max_size) configuration (and the official search) on ``samples``.

    Returns:
        one dict per configuration: name, s_per_image, images_per_s, kept_per_image,
        raw_per_image, and for each threshold t recall@t (kept boxes, what SoCo samples from)
        raw_recall@t (all boxes before the filter) and sized_recall@t (kept boxes, only the
        ground-truth boxes that pass the strict filter themselves: the objects SoCo can use).
    """
    cv2.setNumThreads(1)
    names = [f"{m}@{s if s > 0 else 'full'}" for m, s in configs]
    runners = [(n, m, s) for n, (m, s) in zip(names, configs)]
    official = official_search() if with_official else None
    if official is not None:
        runners.append(("official", None, None))
    stats = {n: defaultdict(float) for n, _, _ in runners}
    total_gt = sum(len(g) for _, g in samples)
    eligible = [_soco_sized(path, gt) for path, gt in samples]
    total_eligible = sum(len(e) for e in eligible)
    for (path, gt), gt_ok in zip(samples, eligible):
        for name, mode, size in runners:
            st = stats[name]
            t0 = time.perf_counter()
            if mode is None:
                img = cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]
                raw = official(np.ascontiguousarray(img))
                h, w = img.shape[:2]
                kept, _ = filter_boxes(raw, w, h, FilterConfig())
                n_raw = len(raw)
            else:
                res = propose_image(path, size, mode)
                kept, n_raw, raw = res.boxes, res.raw, res.raw_boxes
            st["seconds"] += time.perf_counter() - t0
            st["kept"] += len(kept)
            st["raw"] += n_raw
            for t, c in zip(thresholds, box_recall(gt, kept, thresholds)):
                st[f"recall@{t}"] += c
            for t, c in zip(thresholds, box_recall(gt, raw, thresholds)):
                st[f"raw_recall@{t}"] += c
            for t, c in zip(thresholds, box_recall(gt_ok, kept, thresholds)):
                st[f"sized_recall@{t}"] += c
    rows = []
    n = max(1, len(samples))
    for name, _, _ in runners:
        st = stats[name]
        row = {"name": name, "s_per_image": st["seconds"] / n,
               "images_per_s": n / max(st["seconds"], 1e-9),
               "kept_per_image": st["kept"] / n, "raw_per_image": st["raw"] / n}
        for t in thresholds:
            row[f"recall@{t}"] = st[f"recall@{t}"] / max(1, total_gt)
            row[f"raw_recall@{t}"] = st[f"raw_recall@{t}"] / max(1, total_gt)
            row[f"sized_recall@{t}"] = st[f"sized_recall@{t}"] / max(1, total_eligible)
        row["gt_boxes"], row["sized_gt_boxes"] = total_gt, total_eligible
        rows.append(row)
    base = next((r for r in rows if r["name"] == "official"), None)
    for r in rows:
        r["speedup_vs_official"] = (base["s_per_image"] / r["s_per_image"]) if base else None
    return rows


def format_table(rows: List[dict], thresholds: Sequence[float] = (0.5, 0.7)) -> str:
    """Markdown table of :func:`benchmark` rows."""
    head = ["config", "ms / image", "images/s per core", "x official", "kept / image",
            "raw / image"] + [f"recall {t}" for t in thresholds] + [
            f"SoCo-sized recall {t}" for t in thresholds] + [
            f"raw recall {t}" for t in thresholds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sp = r.get("speedup_vs_official")
        cells = [r["name"], f"{1000 * r['s_per_image']:.1f}", f"{r['images_per_s']:.1f}",
                 "-" if sp is None else f"{sp:.1f}", f"{r['kept_per_image']:.1f}",
                 f"{r['raw_per_image']:.0f}"] + [
            f"{r[f'{kind}recall@{t}']:.3f}" for kind in ("", "sized_", "raw_") for t in thresholds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def photo_samples(out_dir: str, size: Tuple[int, int] = (500, 375)) -> List[Tuple[str, np.ndarray]]:
    """scikit-image's colour photographs resized to ``size`` (ImageNet-like), no labels."""
    import os

    import skimage.data

    os.makedirs(out_dir, exist_ok=True)
    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                 "hubble_deep_field", "retina", "colorwheel"):
        img = cv2.resize(np.asarray(getattr(skimage.data, name)())[:, :, ::-1], size,
                         interpolation=cv2.INTER_AREA)
        path = os.path.join(out_dir, f"{name}.jpg")
        cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append((path, np.zeros((0, 4))))
    return out


def default_samples(work_dir: str, num_images: int, image_size: int) -> Optional[list]:
    """The synthetic demo scenes (labelled, COCO format) rendered at ``image_size`` px."""
    import os

    try:
        from soco_d2.data.demo import generate_demo_dataset
    except ImportError:
        return None
    root = os.path.join(work_dir, f"demo_{image_size}_{num_images}")
    generate_demo_dataset(root, num_unlabeled=0, num_train=0, num_val=num_images,
                          image_size=image_size)
    return load_coco_boxes(os.path.join(root, "annotations", "instances_val.json"),
                           os.path.join(root, "val"), num_images)
