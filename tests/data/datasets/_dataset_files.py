"""Tiny dataset trees written by the tests: image folders, COCO json, Pascal-VOC XML."""
import json
import uuid

import cv2
import numpy as np


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
