"""Test data, one home for all of it: image folders, proposal caches, dataset trees (COCO json,
Pascal-VOC XML), small photographs, and random SoCo batches.

Random-texture folders all draw from ``np.random.default_rng(0)`` (numpy's generator: the same
on every CPU), so a folder of a given count and size holds the same pixels in every test.
"""
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch


def write_random_images(
    root,
    *,
    count: int = 6,
    height: int = 80,
    width: int = 96,
    names: Optional[Sequence[str]] = None,
    after_each: Optional[Callable[[str, np.random.Generator], None]] = None,
) -> str:
    """Writes ``img_{i}.png`` random-texture images, seeded, into ``root`` (created if missing).

    Args:
        count, height, width: how many images and their size in pixels.
        names: file names (relative paths) to write instead of ``img_{i}.png``; ``count`` is
            then ``len(names)``.
        after_each: called as ``after_each(file_name, rng)`` right after each image is written,
            to draw per-image extras (proposal boxes) from the same seeded stream.

    Returns:
        ``root`` as a string.
    """
    names = list(names) if names is not None else [f"img_{i}.png" for i in range(count)]
    rng = np.random.default_rng(0)
    for name in names:
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), np.uint8))
        if after_each is not None:
            after_each(name, rng)
    return str(root)


def write_proposal_folder(
    root, count: int = 8, *, height: int = 80, width: int = 96
) -> Tuple[str, str]:
    """:func:`write_random_images` plus a proposal cache with 5 random boxes per image.

    The boxes are drawn right after each image from the same generator: corners in
    ``[0, min(h, w) / 2)``, sides in ``[20, min(h, w) / 2)``.

    Returns:
        ``(image_dir, cache_path)`` as strings; the cache is ``{root}_proposals.bin``.
    """
    from soco_d2.data.proposals.cache import write_cache

    half = min(height, width) / 2
    entries = {}

    def add_boxes(name, rng):
        xy = rng.uniform(0, half, (5, 2))
        wh = rng.uniform(20, half, (5, 2))
        entries[name] = dict(
            boxes=np.concatenate([xy, xy + wh], 1).astype(np.float32), width=width,
            height=height, rule="test",
        )

    root = os.fspath(root).rstrip(os.sep)
    write_random_images(root, count=count, height=height, width=width, after_each=add_boxes)
    cache = root + "_proposals.bin"
    write_cache(cache, entries)
    return root, cache


def write_grey_images(
    root, shades: Sequence[int], *, height: int, width: int, names: Optional[Sequence[str]] = None
) -> List[str]:
    """One flat image per shade, ``{i}.png`` (or ``names[i]``), into ``root`` (created if
    missing); returns their paths."""
    os.makedirs(root, exist_ok=True)
    names = names or [f"{i}.png" for i in range(len(shades))]
    paths = [os.path.join(root, n) for n in names]
    for path, shade in zip(paths, shades):
        cv2.imwrite(path, np.full((height, width, 3), shade, np.uint8))
    return paths


_SMALL_VOC_XML = """<annotation><filename>{name}.jpg</filename>
<size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>{cls}</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>30</xmax><ymax>40</ymax>
</bndbox></object></annotation>"""


def write_small_voc(
    root,
    classes: Sequence[str] = ("disc",),
    ids: Sequence[str] = ("a", "b", "c", "d"),
    splits: Optional[Dict[str, Sequence[str]]] = None,
) -> str:
    """A VOC tree as a user hands it to the pipeline: per id a 64x48 image of its own grey and
    one box (no pose/truncated/difficult tags) of class ``classes[i % len(classes)]``.

    Args:
        splits: split name -> ids; by default ``train`` the first half, ``val`` the rest.

    Returns:
        the tree root as a string.
    """
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    shades = [(60 + 40 * i) % 256 for i in range(len(ids))]
    write_grey_images(os.path.join(root, "JPEGImages"), shades, height=48, width=64,
                      names=[f"{name}.jpg" for name in ids])
    for i, name in enumerate(ids):
        with open(os.path.join(root, "Annotations", f"{name}.xml"), "w") as f:
            f.write(_SMALL_VOC_XML.format(name=name, cls=classes[i % len(classes)]))
    if splits is None:
        half = len(ids) // 2
        splits = {"train": ids[:half], "val": ids[half:]}
    for split, part in splits.items():
        with open(os.path.join(root, "ImageSets/Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(part) + "\n")
    return str(root)


def unique_name(prefix: str) -> str:
    """A dataset name no other test uses (the catalogs are process-wide)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def write_image_tree(root) -> None:
    """Four images at three depths, plus files that are not images."""
    rng = np.random.RandomState(0)
    for rel in ["a/x.jpg", "a/b/y.PNG", "z.jpeg", "a/c/w.jpg"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), rng.randint(0, 256, (32, 48, 3), dtype=np.uint8))
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".hidden.jpg").write_bytes(b"")


def write_coco(root, with_masks: bool = True) -> tuple:
    """One 60x40 image with one box (and polygon) of category 5; categories 5 and 9.

    Returns:
        (json path, image folder) as strings.
    """
    img_dir = root / "imgs"
    img_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    ann = {"id": 1, "image_id": 7, "category_id": 5, "bbox": [2, 3, 10, 20], "area": 200,
           "iscrowd": 0}
    if with_masks:
        ann["segmentation"] = [[2, 3, 12, 3, 12, 23, 2, 23]]
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 60, "height": 40}],
        "annotations": [ann],
        "categories": [{"id": 5, "name": "thing"}, {"id": 9, "name": "other"}],
    }
    json_file = root / "a.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(img_dir)


def write_voc(root, objects_per_image, tags: bool = True, size=(80, 50)) -> str:
    """A VOC tree with split ``trainval``; one image per entry of ``objects_per_image``.

    Args:
        objects_per_image: per image, a list of ``(name, (xmin, ymin, xmax, ymax))`` or
            ``(name, box, difficult)``; box values are written as given (ints or strings).
        tags: write ``<pose>``, ``<truncated>``, ``<difficult>`` (False: as LabelImg-like
            tools often do, only where an object gives ``difficult`` explicitly).

    Returns:
        the tree root as a string.
    """
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ids = []
    w, h = size
    for i, objects in enumerate(objects_per_image):
        fid = f"{i:04d}"
        ids.append(fid)
        cv2.imwrite(str(root / "JPEGImages" / f"{fid}.jpg"), np.zeros((h, w, 3), np.uint8))
        objs = ""
        for obj in objects:
            name, box = obj[0], obj[1]
            extra = ""
            if tags:
                extra = "<pose>Left</pose><truncated>0</truncated>"
                extra += f"<difficult>{obj[2] if len(obj) > 2 else 0}</difficult>"
            elif len(obj) > 2:
                extra = f"<difficult>{obj[2]}</difficult>"
            tags_and_values = zip(("xmin", "ymin", "xmax", "ymax"), box)
            corners = "".join(f"<{t}>{v}</{t}>" for t, v in tags_and_values)
            objs += f"<object><name>{name}</name>{extra}<bndbox>{corners}</bndbox></object>"
        (root / "Annotations" / f"{fid}.xml").write_text(
            f"<annotation><filename>{fid}.jpg</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
        )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return str(root)


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "camera", "coins", "clock", "retina")


def write_photos(root: str, names=PHOTOS, side: int = 160) -> list:
    """Real photographs (scikit-image's bundled samples), each with its longer side resized to
    ``side`` px, under ``a/`` and ``b/`` as .png and .jpg; returns relative paths."""
    import skimage.data

    os.makedirs(root, exist_ok=True)
    rels = []
    for i, name in enumerate(names):
        img = np.asarray(getattr(skimage.data, name)())
        img = img[:, :, ::-1] if img.ndim == 3 else img  # RGB -> BGR for cv2.imwrite
        s = side / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                         interpolation=cv2.INTER_AREA)
        rel = f"{'a' if i % 2 else 'b'}/{name}.{'png' if i % 3 == 0 else 'jpg'}"
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        assert cv2.imwrite(os.path.join(root, rel), img)
        rels.append(rel)
    return rels


def random_soco_batch(cfg, batch_size: int = 2, seed: int = 0) -> List[dict]:
    """Random SoCo mapper outputs for ``cfg``: uint8 views and valid XYXY_ABS boxes.

    Args:
        cfg: a SoCo config (INPUT.SSL.VIEW_SIZES, INPUT.SOCO.NUM_PROPOSALS are read).
        batch_size: number of images.
        seed: generator seed; the same seed gives the same batch.

    Returns:
        list of dicts with "file_name", "image_id", "views" and "boxes".
    """
    g = torch.Generator().manual_seed(seed)
    k = cfg.INPUT.SOCO.NUM_PROPOSALS
    batch = []
    for i in range(batch_size):
        views, boxes = [], []
        for side in cfg.INPUT.SSL.VIEW_SIZES:
            views.append(torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8))
            wh = side * (0.1 + 0.85 * torch.rand(k, 2, generator=g))
            xy = (side - wh) * torch.rand(k, 2, generator=g)
            boxes.append(torch.cat([xy, xy + wh], dim=1).float())
        batch.append({"file_name": f"random_{i}.jpg", "image_id": i, "views": views,
                      "boxes": boxes})
    return batch
