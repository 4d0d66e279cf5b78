"""Unlabeled image folders, the builtin names and the one idempotency rule."""
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import soco_d2  # noqa: F401  (registers the builtin names)
from soco_d2.data import register_image_folder as exported_register_image_folder
from soco_d2.data.datasets import (
    BUILTIN_LABELLED,
    BUILTIN_UNLABELED,
    load_image_folder,
    register_builtin,
    register_image_folder,
    scan_image_folder,
)

from _data import unique_name, write_coco, write_image_tree


def _forget(name):
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_scan_is_recursive_sorted_posix(tmp_path):
    write_image_tree(tmp_path)
    assert scan_image_folder(str(tmp_path)) == ["a/b/y.PNG", "a/c/w.jpg", "a/x.jpg", "z.jpeg"]
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        scan_image_folder(str(tmp_path / "missing"))


def test_load_lists_every_image_without_a_cache(tmp_path):
    write_image_tree(tmp_path)
    dicts = load_image_folder(str(tmp_path))
    assert dicts == [
        {"file_name": str(tmp_path / key), "image_id": key}
        for key in ["a/b/y.PNG", "a/c/w.jpg", "a/x.jpg", "z.jpeg"]
    ]
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images"):
        load_image_folder(str(tmp_path / "empty"))


def test_register_is_lazy_and_records_the_cache_only(tmp_path):
    assert exported_register_image_folder is register_image_folder
    name = unique_name("folder")
    # The cache does not exist: a folder never opens it, it only records its absolute path.
    assert register_image_folder(name, str(tmp_path / "not-yet"), "rel/cache")
    try:
        meta = MetadataCatalog.get(name)
        assert meta.image_root == str(tmp_path / "not-yet")
        assert meta.proposal_cache == os.path.abspath("rel/cache")
        assert meta.evaluator_type is None
        with pytest.raises(FileNotFoundError):  # only now is the disk read
            DatasetCatalog.get(name)
        write_image_tree(tmp_path / "not-yet")
        assert len(DatasetCatalog.get(name)) == 4
    finally:
        _forget(name)

    name = unique_name("folder")
    register_image_folder(name, str(tmp_path / "imgs"))
    assert MetadataCatalog.get(name).proposal_cache is None
    _forget(name)


def test_one_idempotency_rule(tmp_path):
    name = unique_name("folder")
    assert register_image_folder(name, str(tmp_path / "a"), str(tmp_path / "c"))
    try:
        # Same spec: skipped, the registration is untouched.
        assert not register_image_folder(name, str(tmp_path / "a"), str(tmp_path / "c"))
        # Different spec of a name we registered: replaced.
        assert register_image_folder(name, str(tmp_path / "b"))
        assert MetadataCatalog.get(name).image_root == str(tmp_path / "b")
        assert MetadataCatalog.get(name).proposal_cache is None
    finally:
        _forget(name)
    # A name registered by other code (here detectron2's builtin) is never replaced.
    with pytest.raises(ValueError, match="other code"):
        register_image_folder("coco_2017_val", str(tmp_path))
    assert MetadataCatalog.get("coco_2017_val").evaluator_type == "coco"


def test_builtins_follow_the_datasets_root(tmp_path):
    assert set(BUILTIN_UNLABELED) | set(BUILTIN_LABELLED) <= set(DatasetCatalog.list())
    assert "imagenet_train_unlabeled" in BUILTIN_UNLABELED
    assert "coco_2017_train_unlabeled" in BUILTIN_UNLABELED
    register_builtin(str(tmp_path))
    try:
        meta = MetadataCatalog.get("soco_demo_unlabeled")
        assert meta.image_root == str(tmp_path / "demo" / "unlabeled")
        assert meta.proposal_cache == str(tmp_path / "demo" / "proposals_unlabeled")
        assert MetadataCatalog.get("imagenet_train_unlabeled").image_root == str(
            tmp_path / "imagenet" / "train"
        )
        assert MetadataCatalog.get("coco_2017_train_unlabeled").proposal_cache == str(
            tmp_path / "coco" / "proposals_train2017"
        )
        assert MetadataCatalog.get("soco_demo_val").json_file == os.path.join(
            str(tmp_path), "demo/annotations/instances_val.json"
        )
        mini = MetadataCatalog.get("coco_2017_train_5pct")
        assert mini.image_root == os.path.join(str(tmp_path), "coco/train2017")
        assert len(mini.thing_classes) == 80  # detectron2's COCO metadata
        register_builtin(str(tmp_path))  # same root again: a no-op
        # A labelled builtin loads from the new root once data is there.
        (tmp_path / "demo" / "annotations").mkdir(parents=True)
        json_file, _ = write_coco(tmp_path / "src")
        os.replace(json_file, tmp_path / "demo" / "annotations" / "instances_val.json")
        os.replace(tmp_path / "src" / "imgs", tmp_path / "demo" / "val")
        assert DatasetCatalog.get("soco_demo_val")[0]["file_name"] == os.path.join(
            str(tmp_path), "demo/val", "a.jpg"
        )
    finally:
        register_builtin()
    assert MetadataCatalog.get("soco_demo_val").image_root == os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "demo/val"
    )
