"""Registration from DATASETS.SSL.REGISTER strings, and dataset_info."""
import os

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from soco_d2.config import add_ssl_config
from soco_d2.data.datasets import (
    dataset_info,
    parse_register_spec,
    register_dataset_spec,
    register_from_cfg,
)

from _data import unique_name, write_coco, write_voc


def _cfg():
    return add_ssl_config(get_cfg())


def test_parse_specs():
    s = parse_register_spec("a=coco:/x/a.json:/x/imgs")
    assert (s.name, s.kind, s.args) == ("a", "coco", ("/x/a.json", "/x/imgs"))
    s = parse_register_spec("b = voc:/v/VOC2007:test:cat, dog")
    assert (s.name, s.kind, s.args) == ("b", "voc", ("/v/VOC2007", "test", ("cat", "dog")))
    assert parse_register_spec("c=voc:/v:trainval").args[2] == ()
    s = parse_register_spec("d=folder:~/imgs:/c/cache")
    assert s.args == (os.path.expanduser("~/imgs"), "/c/cache")
    assert parse_register_spec("e=folder:/imgs").args == ("/imgs", None)
    assert parse_register_spec("e=folder:/imgs:").args == ("/imgs", None)
    bad = ("nokind", "x=coco:/only_json", "x=lvis:/a:/b", "=coco:/a:/b", "x=voc:/d",
           "x=folder:", "x=folder:/a:/b:/c", None)
    for spec in bad:
        with pytest.raises(ValueError, match="DATASETS.SSL.REGISTER.*expected"):
            parse_register_spec(spec)


def test_coco_from_command_line_opts(tmp_path):
    json_file, img_dir = write_coco(tmp_path)
    name = unique_name("mine")
    cfg = _cfg()
    # What tools/train_net.py receives as KEY VALUE opts.
    cfg.merge_from_list(["DATASETS.SSL.REGISTER", f"('{name}=coco:{json_file}:{img_dir}',)"])
    assert register_from_cfg(cfg) == [name]
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 1 and dicts[0]["file_name"] == os.path.join(img_dir, "a.jpg")
    ann = dicts[0]["annotations"][0]
    assert ann["bbox"] == [2, 3, 10, 20] and ann["category_id"] == 0
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco" and meta.thing_classes == ["thing", "other"]
    assert meta.json_file == json_file
    assert register_from_cfg(cfg) == [name]  # same spec again: a no-op
    # A changed spec replaces our own registration ...
    register_dataset_spec(f"{name}=coco:{json_file}:/elsewhere")
    assert MetadataCatalog.get(name).image_root == "/elsewhere"
    # ... but never a name registered by other code.
    with pytest.raises(ValueError, match="other code"):
        register_dataset_spec(f"coco_2017_val=coco:{json_file}:{img_dir}")


def test_single_string_and_folder_specs(tmp_path):
    a, b = unique_name("imgs"), unique_name("imgs")
    cfg = _cfg()
    cfg.DATASETS.SSL.REGISTER = (f"{a}=folder:{tmp_path}/imgs:{tmp_path}/cache",)
    assert register_from_cfg(cfg) == [a]
    assert MetadataCatalog.get(a).image_root == str(tmp_path / "imgs")
    assert MetadataCatalog.get(a).proposal_cache == str(tmp_path / "cache")
    assert register_from_cfg(cfg) == [a]  # idempotent
    cfg.DATASETS.SSL.REGISTER = f"{b}=folder:{tmp_path}/imgs"  # a bare string, no cache
    assert register_from_cfg(cfg) == [b]
    assert MetadataCatalog.get(b).proposal_cache is None


def test_register_from_cfg_re_points_builtins(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_from_cfg(_cfg())
    assert MetadataCatalog.get("soco_demo_train").json_file == os.path.join(
        str(tmp_path), "demo/annotations/instances_train.json"
    )
    assert MetadataCatalog.get("imagenet_train_unlabeled").image_root == str(
        tmp_path / "imagenet" / "train"
    )
    monkeypatch.delenv("DETECTRON2_DATASETS")
    register_from_cfg(_cfg())
    assert MetadataCatalog.get("soco_demo_val").image_root == os.path.join("datasets", "demo/val")


def test_dataset_info(tmp_path):
    masks, boxes = unique_name("masks"), unique_name("boxes")
    json_file, img_dir = write_coco(tmp_path / "m", with_masks=True)
    register_dataset_spec(f"{masks}=coco:{json_file}:{img_dir}")
    assert dataset_info(masks) == {
        "num_classes": 2,
        "has_masks": True,
        "evaluator_type": "coco",
        "thing_classes": ["thing", "other"],
    }
    json_file, img_dir = write_coco(tmp_path / "b", with_masks=False)
    register_dataset_spec(f"{boxes}=coco:{json_file}:{img_dir}")
    info = dataset_info(boxes)
    assert info["has_masks"] is False and info["num_classes"] == 2

    voc = unique_name("voc")
    root = write_voc(tmp_path / "voc", [[("zebra", (1, 1, 9, 9))], [("cat", (2, 2, 8, 8))]])
    register_dataset_spec(f"{voc}=voc:{root}:trainval")
    assert dataset_info(voc) == {
        "num_classes": 2,
        "has_masks": False,
        "evaluator_type": "pascal_voc",
        "thing_classes": ["cat", "zebra"],
    }
    # A folder is answered from metadata: its (missing) images are never listed.
    folder = register_dataset_spec(f"{unique_name('f')}=folder:{tmp_path}/missing")
    assert dataset_info(folder) == {
        "num_classes": None, "has_masks": False, "evaluator_type": None, "thing_classes": None
    }
    with pytest.raises(KeyError, match="not registered"):
        dataset_info(unique_name("nothing"))
