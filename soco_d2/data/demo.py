"""Deterministic synthetic detection scenes for the embedded demo.

Each image is a textured, cluttered background (multi-octave colour noise plus unlabeled
distractor blobs and strokes) with 1-5 objects of six classes. Each class has its own shape,
colour range and surface texture; objects vary in scale (log-uniform), rotation and are drawn
in order, so later ones occlude earlier ones. Instance masks are the visible pixels, stored as
COCO polygons; placements that would leave an object less than half visible, or split by a
hole a polygon cannot represent, are redrawn.

Every image comes from its own RNG seeded by (seed, split, index), so output is identical
byte for byte across runs and independent of the number of images generated before it.
"""
import json
import math
import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..utils.io import atomic_directory

__all__ = ["DEMO_CLASSES", "render_scene", "generate_demo_dataset"]

# name -> (hue centre in OpenCV's 0-180 range, texture)
DEMO_CLASSES: Dict[str, Tuple[int, str]] = {
    "disc": (0, "shaded"),
    "square": (110, "stripes"),
    "triangle": (60, "checker"),
    "star": (25, "dots"),
    "cross": (150, "noise"),
    "crescent": (90, "gradient"),
}
_SPLITS = {"unlabeled": 0, "train": 1, "val": 2}
_FORMAT_VERSION = 1


def _noise(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Multi-octave value noise, (size, size, channels) float32 in about [-1, 1]."""
    out = np.zeros((size, size, channels), np.float32)
    for octave, amp in ((4, 1.0), (8, 0.5), (16, 0.25), (size // 2, 0.15)):
        small = rng.standard_normal((octave, octave, channels)).astype(np.float32)
        out += amp * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).reshape(
            size, size, channels
        )
    return out / 1.5


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-saturation textured background with unlabeled clutter, (size, size, 3) uint8 BGR."""
    base = rng.uniform(70, 170, size=3).astype(np.float32)
    img = base + 35.0 * _noise(rng, size, 3)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 10))):  # clutter: muted ellipses and strokes
        color = tuple(int(c) for c in np.clip(base + rng.uniform(-60, 60, 3), 0, 255))
        center = tuple(int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            axes = tuple(int(v) for v in rng.integers(2, max(3, size // 10), 2))
            cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            end = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, center, end, color, int(rng.integers(1, 3)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (3, 3), 0.6)


def _shape_mask(name: str, rng: np.random.Generator, size: int, cx: float, cy: float, r: float):
    """Full (unoccluded) uint8 mask of one object of class ``name`` with radius ``r``."""
    mask = np.zeros((size, size), np.uint8)
    theta = rng.uniform(0, 2 * math.pi)

    def poly(radii: List[float], angles: List[float]) -> np.ndarray:
        pts = [
            (cx + q * math.cos(a + theta), cy + q * math.sin(a + theta))
            for q, a in zip(radii, angles)
        ]
        return np.round(np.array(pts)).astype(np.int32)

    if name == "disc":
        axes = (int(r), int(r * rng.uniform(0.8, 1.0)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, math.degrees(theta), 0, 360, 1, -1)
    elif name == "square":
        cv2.fillPoly(mask, [poly([r] * 4, [k * math.pi / 2 + math.pi / 4 for k in range(4)])], 1)
    elif name == "triangle":
        cv2.fillPoly(mask, [poly([r] * 3, [k * 2 * math.pi / 3 for k in range(3)])], 1)
    elif name == "star":
        radii = [r if k % 2 == 0 else 0.45 * r for k in range(10)]
        cv2.fillPoly(mask, [poly(radii, [k * math.pi / 5 for k in range(10)])], 1)
    elif name == "cross":
        a, b = math.atan2(1, 3), math.pi / 2
        radii = [r, r, r * 0.45, r, r, r * 0.45, r, r, r * 0.45, r, r, r * 0.45]
        angles = []
        for k in range(4):
            angles += [k * b - a, k * b + a, k * b + b / 2]
        cv2.fillPoly(mask, [poly(radii, angles)], 1)
    elif name == "crescent":
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
        off = 0.5 * r
        cut = (int(cx + off * math.cos(theta)), int(cy + off * math.sin(theta)))
        cv2.circle(mask, cut, int(0.8 * r), 0, -1)
    else:
        raise ValueError(f"Unknown demo class {name!r}")
    return mask


def _texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Class-specific surface, (size, size, 3) uint8 BGR."""
    hue, kind = DEMO_CLASSES[name]
    h = (hue + rng.integers(-8, 9)) % 180
    s, v = int(rng.integers(150, 255)), int(rng.integers(150, 255))
    hsv = np.empty((size, size, 3), np.float32)
    hsv[..., 0], hsv[..., 1], hsv[..., 2] = h, s, v
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = float(rng.uniform(4, 8))
    if kind == "stripes":
        hsv[..., 2] *= 0.65 + 0.35 * (np.sin((xx + yy) * 2 * math.pi / period) > 0)
    elif kind == "checker":
        hsv[..., 2] *= 0.6 + 0.4 * (((xx // period) + (yy // period)) % 2)
    elif kind == "dots":
        wave = np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)
        hsv[..., 1] *= 1 - 0.6 * (wave > 0.5)
    elif kind == "noise":
        hsv[..., 2] *= 0.75 + 0.25 * _noise(rng, size, 1)[..., 0].clip(-1, 1)
    elif kind == "gradient":
        hsv[..., 2] *= 0.5 + 0.5 * (xx / size)
    else:  # shaded
        hsv[..., 2] *= 1.0 - 0.3 * ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size**2 / 2)
    hsv[..., 1:] = hsv[..., 1:].clip(0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def _polygons(mask: np.ndarray) -> Tuple[List[List[float]], float]:
    """COCO polygons of a binary mask and the fraction of it they fail to reproduce."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]
    filled = np.zeros_like(mask)
    cv2.fillPoly(filled, contours, 1)
    error = float(np.logical_xor(filled, mask).sum()) / max(1.0, float(mask.sum()))
    # +0.5: contour points are pixel indices, polygon vertices are at pixel centres.
    polys = [(c.reshape(-1, 2).astype(np.float64) + 0.5).ravel().tolist() for c in contours]
    return polys, error


def render_scene(
    rng: np.random.Generator, size: int = 160, max_objects: int = 5, num_classes: int = 6
) -> Tuple[np.ndarray, List[Dict]]:
    """Draw one scene.

    Args:
        rng: the image's own generator.
        size: image side in pixels.
        max_objects: at most this many labeled objects (at least 1).
        num_classes: use the first ``num_classes`` of ``DEMO_CLASSES``.

    Returns:
        image: (size, size, 3) uint8 BGR.
        objects: dicts with ``category_id`` (0-based), ``mask`` (size, size) uint8 visible
            pixels, ``full_area`` (pixels before occlusion), ``polygons``, ``bbox`` [x, y, w, h]
            (COCO XYWH, pixel extents).
    """
    names = list(DEMO_CLASSES)[:num_classes]
    img = _background(rng, size)
    placed: List[Dict] = []  # each: cls, full mask, visible mask
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(names)))
        for _try in range(8):
            r = size * math.exp(rng.uniform(math.log(0.06), math.log(0.28)))
            cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
            full = _shape_mask(names[cls], rng, size, cx, cy, r)
            if full.sum() < 40:
                continue
            occluded = [(p, p["visible"] & (1 - full)) for p in placed]
            ok = all(
                v.sum() >= 0.5 * p["full"].sum() and _polygons(v)[1] < 0.05 for p, v in occluded
            )
            if ok:
                for p, v in occluded:
                    p["visible"] = v
                placed.append({"cls": cls, "full": full, "visible": full.copy()})
                tex = _texture(names[cls], rng, size)
                sel = full.astype(bool)
                img[sel] = tex[sel]
                break
    # Soft edges and sensor noise so boundaries look photographic rather than aliased.
    img = cv2.GaussianBlur(img, (3, 3), 0.5)
    img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    objects = []
    for p in placed:
        ys, xs = np.nonzero(p["visible"])
        polys, _ = _polygons(p["visible"])
        x0, y0 = float(xs.min()), float(ys.min())
        bbox = [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]
        objects.append(
            {
                "category_id": p["cls"],
                "mask": p["visible"],
                "full_area": int(p["full"].sum()),
                "polygons": polys,
                "bbox": bbox,
            }
        )
    return img, objects


def _write_split(
    out: str, split: str, num: int, seed: int, size: int, max_objects: int, num_classes: int
) -> Optional[Dict]:
    os.makedirs(os.path.join(out, split), exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([seed, _SPLITS[split], i])
        img, objects = render_scene(rng, size, max_objects, num_classes)
        file_name = f"{split}_{i:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok, "JPEG encoding failed"
        with open(os.path.join(out, split, file_name), "wb") as f:
            f.write(buf.tobytes())
        images.append({"id": i + 1, "file_name": file_name, "width": size, "height": size})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": obj["category_id"] + 1,
                    "bbox": obj["bbox"],
                    "area": float(obj["mask"].sum()),
                    "segmentation": obj["polygons"],
                    "iscrowd": 0,
                }
            )
    if split == "unlabeled":
        return None
    names = list(DEMO_CLASSES)[:num_classes]
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def generate_demo_dataset(
    out: str,
    num_unlabeled: int = 600,
    num_train: int = 120,
    num_val: int = 480,
    image_size: int = 160,
    max_objects: int = 5,
    num_classes: int = 6,
    seed: int = 0,
    overwrite: bool = False,
) -> Dict:
    """Write the demo dataset to ``out`` (atomically) unless an identical one is there.

    Layout: ``unlabeled/*.jpg``, ``train/*.jpg``, ``val/*.jpg``,
    ``annotations/instances_{train,val}.json`` (COCO, category ids 1..num_classes, polygon
    masks), ``params.json`` (the arguments; its presence marks a finished dataset).

    Returns:
        The parameter dict written to ``params.json``.

    Raises:
        FileExistsError: ``out`` holds a dataset made with other parameters and not overwrite.
    """
    params = dict(
        version=_FORMAT_VERSION,
        num_unlabeled=num_unlabeled,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        max_objects=max_objects,
        num_classes=num_classes,
        seed=seed,
    )
    if not 1 <= num_classes <= len(DEMO_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(DEMO_CLASSES)}], got {num_classes}")
    marker = os.path.join(out, "params.json")
    if os.path.exists(out):
        if os.path.isfile(marker):
            with open(marker) as f:
                if json.load(f) == params:
                    return params
        if not overwrite:
            raise FileExistsError(
                f"{out} exists with different or unknown contents; pass overwrite=True "
                "(--overwrite) to replace it"
            )
    with atomic_directory(out, prefix=".demo-tmp-") as tmp:
        os.makedirs(os.path.join(tmp, "annotations"))
        for split, num in (("unlabeled", num_unlabeled), ("train", num_train), ("val", num_val)):
            coco = _write_split(tmp, split, num, seed, image_size, max_objects, num_classes)
            if coco is not None:
                with open(os.path.join(tmp, "annotations", f"instances_{split}.json"), "w") as f:
                    json.dump(coco, f)
        with open(os.path.join(tmp, "params.json"), "w") as f:
            json.dump(params, f, indent=1, sort_keys=True)
    return params
