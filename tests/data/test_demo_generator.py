"""The synthetic demo dataset: deterministic, valid COCO, masks agree with boxes."""
import hashlib
import json
import os

import numpy as np
import pytest
from detectron2.data.datasets import load_coco_json
from pycocotools import mask as mask_util

from soco_d2.data.demo import DEMO_CLASSES, generate_demo_dataset, render_scene

TINY = dict(num_unlabeled=3, num_train=4, num_val=3, image_size=96, seed=3)


def _digest(root: str) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def test_same_bytes_every_run_and_layout(tmp_path):
    a, b = str(tmp_path / "a" / "demo"), str(tmp_path / "b" / "demo")
    generate_demo_dataset(a, **TINY)
    generate_demo_dataset(b, **TINY)
    da, db = _digest(a), _digest(b)
    assert da == db
    assert sum(k.startswith("unlabeled/") for k in da) == 3
    assert sum(k.startswith("train/") for k in da) == 4
    assert {"annotations/instances_train.json", "annotations/instances_val.json"} <= set(da)
    # A different seed gives different images.
    c = str(tmp_path / "c" / "demo")
    generate_demo_dataset(c, **{**TINY, "seed": 4})
    assert _digest(c)["train/train_000000.jpg"] != da["train/train_000000.jpg"]


def test_rerun_skips_and_conflict_is_an_error(tmp_path):
    out = str(tmp_path / "demo")
    generate_demo_dataset(out, **TINY)
    stamp = os.path.getmtime(os.path.join(out, "train", "train_000000.jpg"))
    generate_demo_dataset(out, **TINY)  # same params: nothing rewritten
    assert os.path.getmtime(os.path.join(out, "train", "train_000000.jpg")) == stamp
    with pytest.raises(FileExistsError):
        generate_demo_dataset(out, **{**TINY, "num_train": 5})
    generate_demo_dataset(out, **{**TINY, "num_train": 5}, overwrite=True)
    assert len(os.listdir(os.path.join(out, "train"))) == 5
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".demo-tmp")]


def test_annotations_load_in_detectron2_and_match_masks(tmp_path):
    out = str(tmp_path / "demo")
    generate_demo_dataset(out, **{**TINY, "num_train": 12})
    json_file = os.path.join(out, "annotations", "instances_train.json")
    with open(json_file) as f:
        coco = json.load(f)
    assert [c["name"] for c in coco["categories"]] == list(DEMO_CLASSES)
    dicts = load_coco_json(json_file, os.path.join(out, "train"), "demo_test_train")
    assert len(dicts) == 12 and all(os.path.isfile(d["file_name"]) for d in dicts)
    anns = coco["annotations"]
    assert len(anns) >= 12  # at least one object per image
    assert len({a["category_id"] for a in anns}) >= 3
    for a in anns:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
        rles = mask_util.frPyObjects(a["segmentation"], 96, 96)
        m = mask_util.decode(mask_util.merge(rles))
        # The polygons reproduce the stored visible area and lie inside the box.
        assert abs(float(m.sum()) - a["area"]) <= 0.25 * a["area"] + 8
        ys, xs = np.nonzero(m)
        assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h


def test_scenes_vary_scale_and_occlude():
    sizes, occluded = [], 0
    for i in range(40):
        img, objects = render_scene(np.random.default_rng([0, 9, i]), size=128)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        for o in objects:
            sizes.append(np.sqrt(o["mask"].sum()))
        # Visible masks of one image never overlap (occluded pixels belong to the top object),
        # and every object keeps at least half of itself visible.
        if len(objects) > 1:
            assert np.stack([o["mask"] for o in objects]).sum(0).max() == 1
        for o in objects:
            assert 0.5 * o["full_area"] <= o["mask"].sum() <= o["full_area"]
            occluded += int(o["mask"].sum() < 0.97 * o["full_area"])
    assert min(sizes) < 16 and max(sizes) > 40
    assert occluded >= 5
    # The background is textured, not flat.
    img, _ = render_scene(np.random.default_rng(1), size=128)
    assert img.std(axis=(0, 1)).min() > 8
