"""NEON tree crowns: real aerial photographs with box labels, from the ``deepforest`` wheel.

The ``deepforest`` package (PyPI, MIT licence; pinned in ``requirements-bench.txt``) ships
airborne RGB orthophotos of the US National Ecological Observatory Network (10 cm per pixel)
under ``deepforest/data/``, four of them with Pascal-VOC XML boxes around every tree crown
(:data:`NEON_TREES_SOURCES`). Crowns are 15-75 px across (median about 40 px), so the images are
cut, at their native scale, into tiles of about ``tile_size`` px: the detector then trains on
images the size of the synthetic demo's (``soco_d2/data/demo.py``).

Split (deterministic, spatial): each labelled image's tile grid is grouped into blocks of
``block_tiles x block_tiles`` tiles; one seeded permutation of all blocks gives the first
``round(train_fraction * blocks)`` to ``train`` and the rest to ``val``. Whole blocks, not
single tiles, go to one side so neighbouring crowns of a train tile are seldom in val.
``unlabeled`` holds tile-sized windows at half-tile stride inside the train blocks, plus the
same windows over the images without labels: pretraining never sees a val pixel.

A crown cut by a tile border keeps its clipped box if at least ``min_visible`` of its area is in
the tile; a smaller remnant becomes an ``iscrowd=1`` box, which detectron2 drops in training and
COCO evaluation treats as an ignore region (a detection there is neither a hit nor a miss).
Every label (``Tree``, ``Alive``, ``Dead``) is one class, ``tree``. Box corners are read as
0-based pixel edges, as DeepForest itself reads them (``OSBS_029.csv`` gives the same numbers).

Output under ``out`` (default ``$DETECTRON2_DATASETS/neon_trees``)::

    unlabeled/*.jpg  train/*.jpg  val/*.jpg
    annotations/instances_{train,val}.json   (COCO boxes, category 1 = "tree", no masks)
    params.json                               (arguments and counts; marks a finished set)

Every crop is named ``{source stem}_x{X}_y{Y}_{W}x{H}.jpg`` after its window in the source.
"""
import importlib.metadata
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...utils.io import atomic_directory
from .catalog import datasets_root
from .voc_evaluation import read_voc_objects

__all__ = [
    "NEON_TREES_SOURCES",
    "find_deepforest_data",
    "tile_edges",
    "half_stride_windows",
    "crop_annotations",
    "split_blocks",
    "prepare_neon_trees",
]

# (image, VOC XML or None for an image without labels) in deepforest/data/. Left out: the
# OSBS_029.tif duplicate of OSBS_029.png and "AWPE Pigeon Lake 2020 DJI_0005.JPG" (a drone
# photograph of birds, another domain).
NEON_TREES_SOURCES: Tuple[Tuple[str, Optional[str]], ...] = (
    ("2019_YELL_2_528000_4978000_image_crop2.png", "2019_YELL_2_528000_4978000_image_crop2.xml"),
    ("2019_YELL_2_541000_4977000_image_crop.png", "2019_YELL_2_541000_4977000_image_crop.xml"),
    ("OSBS_029.png", "OSBS_029.xml"),
    ("SOAP_061.png", "SOAP_061.xml"),
    ("SOAP_031.png", None),
)
CLASS_NAME = "tree"
_FORMAT_VERSION = 1


def find_deepforest_data() -> str:
    """The ``deepforest/data`` folder of the installed ``deepforest`` distribution.

    Found through the distribution's metadata, without importing the package (its runtime
    dependencies are not needed for its data and need not be installed).

    Raises:
        FileNotFoundError: if ``deepforest`` is not installed or has no data folder.
    """
    hint = "install it with `make bench-data-real` (pinned in requirements-bench.txt)"
    try:
        dist = importlib.metadata.distribution("deepforest")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"package 'deepforest' is not installed: {hint}") from None
    data_dir = str(dist.locate_file("deepforest/data"))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"deepforest {dist.version} has no data folder {data_dir}")
    return data_dir


def tile_edges(length: int, tile: int) -> List[int]:
    """Edges of ``max(1, round(length / tile))`` near-equal tiles covering ``[0, length)``.

    Example: ``tile_edges(400, 192) == [0, 200, 400]``; tiles differ by at most 1 px, none is
    dropped and none overlaps.
    """
    n = max(1, int(round(length / tile)))
    return [int(round(length * k / n)) for k in range(n + 1)]


def half_stride_windows(start: int, end: int, n: int) -> List[Tuple[int, int]]:
    """``2n - 1`` windows of size ``round((end - start) / n)`` at half-window stride.

    Returns:
        ``[(offset, size), ...]`` inside ``[start, end)``, the first at ``start``, the last
        ending at ``end``.
    """
    size = int(round((end - start) / n))
    starts = np.linspace(start, end - size, 2 * n - 1)
    return [(int(round(s)), size) for s in starts]


def crop_annotations(boxes: np.ndarray, window: Sequence[int], min_visible: float) -> List[Dict]:
    """COCO annotations of ``boxes`` seen through one crop window.

    Args:
        boxes: (N, 4) float XYXY absolute pixel edges in the source image.
        window: ``(x0, y0, x1, y1)`` of the crop in the source image.
        min_visible: a box keeps ``iscrowd=0`` if at least this fraction of its area lies in the
            window; a smaller non-empty remnant gets ``iscrowd=1`` (an ignore region).

    Returns:
        ``[{"bbox": [x, y, w, h] in crop pixels, "area": w * h, "iscrowd": 0 or 1}, ...]`` in
        the order of ``boxes``; boxes outside the window are left out.
    """
    x0, y0, x1, y1 = window
    out = []
    for bx0, by0, bx1, by1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx0, cy0, cx1, cy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        w, h = cx1 - cx0, cy1 - cy0
        if w <= 0 or h <= 0:
            continue
        visible = (w * h) / max((bx1 - bx0) * (by1 - by0), 1e-9)
        out.append(
            {
                "bbox": [float(cx0 - x0), float(cy0 - y0), float(w), float(h)],
                "area": float(w * h),
                "iscrowd": int(visible < min_visible),
            }
        )
    return out


def split_blocks(num_blocks: int, train_fraction: float, seed: int) -> np.ndarray:
    """Which of ``num_blocks`` blocks are train: ``round(train_fraction * num_blocks)`` of them.

    Returns:
        (num_blocks,) bool array, a function of ``(num_blocks, train_fraction, seed)`` only.
    """
    order = np.random.default_rng([seed, num_blocks]).permutation(num_blocks)
    is_train = np.zeros(num_blocks, bool)
    is_train[order[: int(round(train_fraction * num_blocks))]] = True
    return is_train


def _read_source(data_dir: str, image: str, xml: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 BGR image and (N, 4) float XYXY boxes (empty without an XML file)."""
    path = os.path.join(data_dir, image)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"image {path} is missing or unreadable (data folder {data_dir})")
    if xml is None:
        return img, np.zeros((0, 4))
    objects = read_voc_objects(os.path.join(data_dir, xml))
    boxes = np.array([o["bbox"] for o in objects], dtype=np.float64).reshape(-1, 4)
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        raise ValueError(f"{xml}: {int(bad.sum())} boxes with xmax <= xmin or ymax <= ymin")
    return img, boxes


def _crop_name(stem: str, x: int, y: int, w: int, h: int) -> str:
    return f"{stem}_x{x:05d}_y{y:05d}_{w}x{h}.jpg"


def _write_crop(img: np.ndarray, folder: str, stem: str, x: int, y: int, w: int, h: int) -> Dict:
    name = _crop_name(stem, x, y, w, h)
    ok, buf = cv2.imencode(".jpg", img[y : y + h, x : x + w], [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok, "JPEG encoding failed"
    with open(os.path.join(folder, name), "wb") as f:
        f.write(buf.tobytes())
    return {"file_name": name, "width": w, "height": h}


def _blocks(size: Tuple[int, int], tile_size: int, block_tiles: int) -> List[Dict]:
    """The blocks of one image: pixel extent and their tiles (row-major), in row-major order."""
    width, height = size
    xe, ye = tile_edges(width, tile_size), tile_edges(height, tile_size)
    blocks = []
    for r in range(0, len(ye) - 1, block_tiles):
        for c in range(0, len(xe) - 1, block_tiles):
            rows = range(r, min(r + block_tiles, len(ye) - 1))
            cols = range(c, min(c + block_tiles, len(xe) - 1))
            blocks.append(
                {
                    "extent": (xe[cols[0]], ye[rows[0]], xe[cols[-1] + 1], ye[rows[-1] + 1]),
                    "grid": (len(cols), len(rows)),
                    "tiles": [(xe[j], ye[i], xe[j + 1], ye[i + 1]) for i in rows for j in cols],
                }
            )
    return blocks


def _windows(extent: Sequence[int], grid: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """Half-stride unlabeled windows ``(x, y, w, h)`` over ``extent`` of ``grid`` tiles."""
    x0, y0, x1, y1 = extent
    xs = half_stride_windows(x0, x1, grid[0])
    ys = half_stride_windows(y0, y1, grid[1])
    return [(x, y, w, h) for y, h in ys for x, w in xs]


def _check_args(tile_size: int, block_tiles: int, train_fraction: float, min_visible: float):
    if tile_size < 32:
        raise ValueError(f"tile_size (--tile-size) must be >= 32 px, got {tile_size}")
    if block_tiles < 1:
        raise ValueError(f"block_tiles (--block-tiles) must be >= 1, got {block_tiles}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(
            f"train_fraction (--train-fraction) must be in (0, 1), got {train_fraction}"
        )
    if not 0.0 < min_visible <= 1.0:
        raise ValueError(f"min_visible (--min-visible) must be in (0, 1], got {min_visible}")


def prepare_neon_trees(
    data_dir: Optional[str] = None,
    out: Optional[str] = None,
    *,
    sources: Sequence[Tuple[str, Optional[str]]] = NEON_TREES_SOURCES,
    tile_size: int = 192,
    block_tiles: int = 2,
    train_fraction: float = 0.5,
    min_visible: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
) -> Dict:
    """Write the tiled NEON tree-crown set (layout in the module docstring) atomically.

    Args:
        data_dir: folder holding ``sources``; default :func:`find_deepforest_data`.
        out: output folder; default ``$DETECTRON2_DATASETS/neon_trees``.
        sources: ``(image, VOC XML or None)`` file names in ``data_dir``.
        tile_size: target tile side in px (tiles are within a few px of it, see
            :func:`tile_edges`).
        block_tiles: side, in tiles, of the blocks that go to train or val whole.
        train_fraction: fraction of the blocks that go to train.
        min_visible: visible fraction below which a cut box becomes ``iscrowd=1``.
        seed: seed of the block permutation.
        overwrite: replace an ``out`` made with other arguments.

    Returns:
        ``{"params": the arguments, "counts": {split: {"images", "boxes", "ignored"}}}``, as
        written to ``params.json``. A rerun with the same arguments returns it without writing.

    Raises:
        FileNotFoundError: a source file is missing (or ``deepforest`` is not installed).
        FileExistsError: ``out`` holds something else and not ``overwrite``.
        ValueError: an argument is out of range, or the split leaves train or val empty.
    """
    _check_args(tile_size, block_tiles, train_fraction, min_visible)
    out = out or os.path.join(datasets_root(), "neon_trees")
    params = dict(
        version=_FORMAT_VERSION,
        sources=[[image, xml] for image, xml in sources],
        tile_size=tile_size,
        block_tiles=block_tiles,
        train_fraction=train_fraction,
        min_visible=min_visible,
        seed=seed,
    )
    marker = os.path.join(out, "params.json")
    if os.path.exists(out):
        if os.path.isfile(marker):
            with open(marker) as f:
                done = json.load(f)
            if done.get("params") == params:
                return done
        if not overwrite:
            raise FileExistsError(
                f"{out} exists with different or unknown contents; pass overwrite=True "
                "(--overwrite) to replace it"
            )
    data_dir = data_dir or find_deepforest_data()  # only now: a finished set needs no package
    missing = [f for s in sources for f in s if f and not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise FileNotFoundError(f"not in the data folder {data_dir}: {', '.join(missing)}")

    loaded = [
        (os.path.splitext(image)[0], *_read_source(data_dir, image, xml), xml is not None)
        for image, xml in sources
    ]
    blocks = []  # (source index, block) of the labelled images, in source then row-major order
    for k, (_, img, _, labelled) in enumerate(loaded):
        if labelled:
            size = (img.shape[1], img.shape[0])
            blocks += [(k, b) for b in _blocks(size, tile_size, block_tiles)]
    is_train = split_blocks(len(blocks), train_fraction, seed)
    if is_train.all() or not is_train.any():
        raise ValueError(
            f"train_fraction {train_fraction} of {len(blocks)} blocks leaves train or val empty; "
            "lower --block-tiles or --tile-size, or change --train-fraction"
        )

    with atomic_directory(out, prefix=".neon_trees-tmp-") as tmp:
        counts = _write_splits(tmp, loaded, blocks, is_train, tile_size, min_visible)
        done = {"params": params, "counts": counts}
        with open(os.path.join(tmp, "params.json"), "w") as f:
            json.dump(done, f, indent=1, sort_keys=True)
    return done


def _write_splits(
    out: str, loaded, blocks, is_train: np.ndarray, tile_size: int, min_visible: float
) -> Dict:
    """Write crops and COCO json of every split under ``out``; returns the counts."""
    for split in ("unlabeled", "train", "val", "annotations"):
        os.makedirs(os.path.join(out, split))
    records: Dict[str, List[Tuple[Dict, List[Dict]]]] = {"train": [], "val": []}
    unlabeled = 0
    for (k, block), train in zip(blocks, is_train):
        stem, img, boxes, _ = loaded[k]
        split = "train" if train else "val"
        for x0, y0, x1, y1 in block["tiles"]:
            image = _write_crop(img, os.path.join(out, split), stem, x0, y0, x1 - x0, y1 - y0)
            records[split].append((image, crop_annotations(boxes, (x0, y0, x1, y1), min_visible)))
        if train:
            for window in _windows(block["extent"], block["grid"]):
                _write_crop(img, os.path.join(out, "unlabeled"), stem, *window)
                unlabeled += 1
    for stem, img, _, labelled in loaded:
        if not labelled:
            height, width = img.shape[:2]
            grid = (len(tile_edges(width, tile_size)) - 1, len(tile_edges(height, tile_size)) - 1)
            for window in _windows((0, 0, width, height), grid):
                _write_crop(img, os.path.join(out, "unlabeled"), stem, *window)
                unlabeled += 1
    counts = {"unlabeled": {"images": unlabeled, "boxes": 0, "ignored": 0}}
    for split, recs in records.items():
        coco = _coco(recs)
        with open(os.path.join(out, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(coco, f)
        crowd = sum(a["iscrowd"] for a in coco["annotations"])
        counts[split] = {
            "images": len(coco["images"]),
            "boxes": len(coco["annotations"]) - crowd,
            "ignored": crowd,
        }
    return counts


def _coco(records: List[Tuple[Dict, List[Dict]]]) -> Dict:
    """COCO instances dict of ``(image, annotations)`` records, image ids in file-name order."""
    images, annotations = [], []
    for image_id, (image, anns) in enumerate(sorted(records, key=lambda r: r[0]["file_name"]), 1):
        images.append({"id": image_id, **image})
        for ann in anns:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, **ann}
            )
    categories = [{"id": 1, "name": CLASS_NAME, "supercategory": "plant"}]
    return {"images": images, "annotations": annotations, "categories": categories}
