"""Dataset registration from DATASETS.SOCO.REGISTER strings: COCO json and Pascal-VOC XML."""
import json
import os
import uuid

import cv2
import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from soco_d2.config import add_soco_config
from soco_d2.data.register import (
    parse_register_spec,
    register_dataset_spec,
    register_from_cfg,
    register_soco_builtin,
)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _write_coco(root) -> tuple:
    img_dir = root / "imgs"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 60, "height": 40}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 5,
                "bbox": [2, 3, 10, 20],
                "area": 200,
                "iscrowd": 0,
                "segmentation": [[2, 3, 12, 3, 12, 23, 2, 23]],
            },
        ],
        "categories": [{"id": 5, "name": "thing"}, {"id": 9, "name": "other"}],
    }
    json_file = root / "a.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(img_dir)


def _write_voc(root, objects_per_image) -> str:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ids = []
    for i, objects in enumerate(objects_per_image):
        fid = f"{i:04d}"
        ids.append(fid)
        cv2.imwrite(str(root / "JPEGImages" / f"{fid}.jpg"), np.zeros((50, 80, 3), np.uint8))
        objs = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b in objects
        )
        (root / "Annotations" / f"{fid}.xml").write_text(
            f"<annotation><size><width>80</width><height>50</height></size>{objs}</annotation>"
        )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return str(root)


def test_parse_specs():
    s = parse_register_spec("a=coco:/x/a.json:/x/imgs")
    assert (s.name, s.kind, s.args) == ("a", "coco", ("/x/a.json", "/x/imgs"))
    s = parse_register_spec("b = voc:/v/VOC2007:test:cat, dog")
    assert (s.name, s.kind, s.args) == ("b", "voc", ("/v/VOC2007", "test", ("cat", "dog")))
    assert parse_register_spec("c=voc:/v:trainval").args[2] == ()
    s = parse_register_spec("d=folder:~/imgs:/c/cache")
    assert s.args[0] == os.path.expanduser("~/imgs")
    for bad in ("nokind", "x=coco:/only_json", "x=lvis:/a:/b", "=coco:/a:/b", "x=voc:/d"):
        with pytest.raises(ValueError, match="expected"):
            parse_register_spec(bad)


def test_coco_from_command_line_opts(tmp_path):
    json_file, img_dir = _write_coco(tmp_path)
    name = _unique("mine")
    cfg = add_soco_config(get_cfg())
    # What tools/train_net.py receives as KEY VALUE opts.
    cfg.merge_from_list(["DATASETS.SOCO.REGISTER", f"('{name}=coco:{json_file}:{img_dir}',)"])
    assert register_from_cfg(cfg) == [name]
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 1 and dicts[0]["file_name"] == os.path.join(img_dir, "a.jpg")
    ann = dicts[0]["annotations"][0]
    assert ann["bbox"] == [2, 3, 10, 20] and ann["category_id"] == 0
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco" and meta.thing_classes == ["thing", "other"]
    assert meta.json_file == json_file
    # Idempotent: same spec again is a no-op; a different spec under the same name is an error.
    assert register_from_cfg(cfg) == [name]
    with pytest.raises(ValueError, match="different spec"):
        register_dataset_spec(f"{name}=coco:{json_file}:/elsewhere")
    with pytest.raises(ValueError, match="other code"):
        register_dataset_spec(f"coco_2017_val=coco:{json_file}:{img_dir}")


def test_voc_collects_classes_and_loads(tmp_path):
    root = _write_voc(
        tmp_path / "VOC2007",
        [[("zebra", (11, 21, 40, 45)), ("cat", (1, 1, 10, 10))], [("zebra", (5, 6, 70, 49))]],
    )
    name = _unique("myvoc")
    register_dataset_spec(f"{name}=voc:{root}:trainval")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cat", "zebra"]  # sorted, each once
    assert meta.evaluator_type == "pascal_voc" and meta.year == 2007
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == ["0000", "0001"]
    first = dicts[0]["annotations"]
    # VOC boxes are 1-based inclusive; detectron2 shifts x1, y1 to 0-based.
    assert [a["category_id"] for a in first] == [1, 0]
    assert first[0]["bbox"] == pytest.approx([10, 20, 40, 45])


def test_voc_explicit_classes_keep_order(tmp_path):
    root = _write_voc(tmp_path / "mine", [[("cat", (1, 1, 10, 10))], []])
    name = _unique("myvoc")
    register_dataset_spec(f"{name}=voc:{root}:trainval:zebra,cat")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["zebra", "cat"] and meta.year == 2012
    assert DatasetCatalog.get(name)[0]["annotations"][0]["category_id"] == 1


def test_voc_bad_split_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file"):
        register_dataset_spec(f"{_unique('v')}=voc:{tmp_path}:trainval")
    root = _write_voc(tmp_path / "one", [[("cat", (1, 1, 10, 10))]])
    with pytest.raises(ValueError, match="at least 2"):
        register_dataset_spec(f"{_unique('v')}=voc:{root}:trainval:cat")


def test_builtin_follow_detectron2_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_soco_builtin()
    meta = MetadataCatalog.get("soco_demo_train")
    assert meta.json_file == os.path.join(str(tmp_path), "demo/annotations/instances_train.json")
    assert MetadataCatalog.get("coco_2017_train_5pct").image_root == os.path.join(
        str(tmp_path), "coco/train2017"
    )
    monkeypatch.delenv("DETECTRON2_DATASETS")
    register_soco_builtin()
    assert MetadataCatalog.get("soco_demo_val").image_root == os.path.join("datasets", "demo/val")


def test_folder_delegates_to_pretrain_registration(tmp_path):
    name = _unique("imgs")
    cfg = add_soco_config(get_cfg())
    cfg.DATASETS.SOCO.REGISTER = (f"{name}=folder:{tmp_path}/imgs:{tmp_path}/cache",)
    assert register_from_cfg(cfg) == [name]
    meta = MetadataCatalog.get(name)
    assert meta.image_root == str(tmp_path / "imgs")
    assert meta.proposal_cache == str(tmp_path / "cache")
    assert register_from_cfg(cfg) == [name]  # idempotent
