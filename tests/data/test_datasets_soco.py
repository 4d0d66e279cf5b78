"""Pretraining dataset registration and the pretraining loader."""

import os

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import soco_d2  # noqa: F401  (registers the builtin datasets)
from soco_d2.config import add_soco_config
from soco_d2.data.build import build_soco_pretrain_loader, get_pretrain_dataset_dicts
from soco_d2.data.datasets import (
    PRETRAIN_BUILTIN,
    load_image_folder,
    register_image_folder,
    register_pretrain_builtin,
    scan_image_folder,
)


class FakeProposalCache:
    """get/find/info like ProposalCache; find matches by basename."""

    def __init__(self, keys):
        self.boxes = {k: np.array([[2, 2, 30, 20]], np.float32) for k in keys}

    def __contains__(self, key):
        return key in self.boxes

    def get(self, key):
        return self.boxes[key]

    def find(self, key):
        if key in self.boxes:
            return key
        for k in self.boxes:
            if os.path.basename(k) == os.path.basename(key):
                return k
        raise KeyError(key)

    def info(self, key):
        return {"rule": "fake", "width": 48, "height": 32}


def _make_tree(root):
    rng = np.random.RandomState(0)
    for rel in ["a/x.jpg", "a/b/y.PNG", "z.jpeg", "a/c/w.jpg"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.randint(0, 256, (32, 48, 3), dtype=np.uint8)).save(p)
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".hidden.jpg").write_bytes(b"")


def test_scan_is_recursive_sorted_posix(tmp_path):
    _make_tree(tmp_path)
    assert scan_image_folder(str(tmp_path)) == ["a/b/y.PNG", "a/c/w.jpg", "a/x.jpg", "z.jpeg"]
    with pytest.raises(FileNotFoundError):
        scan_image_folder(str(tmp_path / "missing"))


def test_load_matches_cache_by_key_or_basename_and_skips_missing(tmp_path, caplog):
    _make_tree(tmp_path)
    cache = FakeProposalCache(["a/x.jpg", "y.PNG", "z.jpeg"])  # a/c/w.jpg missing
    dicts = load_image_folder(str(tmp_path), "cache-path", open_cache=lambda p: cache)
    assert [d["image_id"] for d in dicts] == ["a/b/y.PNG", "a/x.jpg", "z.jpeg"]
    assert [d["proposal_key"] for d in dicts] == ["y.PNG", "a/x.jpg", "z.jpeg"]
    for d in dicts:
        assert set(d) == {"file_name", "image_id", "proposal_cache", "proposal_key"}
        assert os.path.isabs(d["file_name"]) and os.path.exists(d["file_name"])
        assert d["proposal_cache"] == "cache-path"
    assert "1 of 4 images" in caplog.text
    with pytest.raises(ValueError):
        load_image_folder(str(tmp_path), "c", open_cache=lambda p: FakeProposalCache([]))
    with pytest.raises(FileNotFoundError):
        load_image_folder(str(tmp_path), str(tmp_path / "no-cache"))


def test_register_is_lazy_and_sets_metadata(tmp_path):
    name = "test_soco_folder_lazy"
    register_image_folder(name, str(tmp_path / "not-yet"), str(tmp_path / "cache"))
    try:
        meta = MetadataCatalog.get(name)
        assert meta.image_root == str(tmp_path / "not-yet")
        assert meta.proposal_cache == str(tmp_path / "cache")
        assert meta.evaluator_type is None
        with pytest.raises(FileNotFoundError):  # only now is the disk read
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_builtins_follow_detectron2_datasets_root(tmp_path):
    assert set(PRETRAIN_BUILTIN) <= set(DatasetCatalog.list())
    register_pretrain_builtin(str(tmp_path))
    try:
        meta = MetadataCatalog.get("soco_demo_unlabeled")
        assert meta.image_root == str(tmp_path / "demo" / "unlabeled")
        assert meta.proposal_cache == str(tmp_path / "demo" / "proposals_unlabeled")
        assert MetadataCatalog.get("imagenet_train_soco").image_root == str(
            tmp_path / "imagenet" / "train"
        )
        register_pretrain_builtin(str(tmp_path))  # idempotent
    finally:
        register_pretrain_builtin()


def _loader_cfg(names, caches=()):
    cfg = get_cfg()
    add_soco_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.SOCO.VIEW_SIZES = [64, 64, 32]
    cfg.DATASETS.TRAIN = tuple(names)
    cfg.DATASETS.SOCO.PROPOSAL_CACHES = tuple(caches)
    cfg.SOLVER.IMS_PER_BATCH = 3
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # must not drop annotation-less dicts
    return cfg


def test_loader_yields_lists_of_mapper_outputs(tmp_path):
    _make_tree(tmp_path)
    cache = FakeProposalCache(["a/x.jpg", "a/b/y.PNG", "z.jpeg", "a/c/w.jpg"])
    folder, labelled = "test_soco_folder_loader", "test_soco_labelled_loader"
    DatasetCatalog.register(
        folder, lambda: load_image_folder(str(tmp_path), "c1", open_cache=lambda p: cache)
    )
    # A labelled detectron2-style dataset (empty annotations) reused for pretraining.
    DatasetCatalog.register(
        labelled,
        lambda: [{"file_name": str(tmp_path / "z.jpeg"), "image_id": 7, "annotations": []}],
    )
    try:
        cfg = _loader_cfg([folder, labelled], caches=("", "c2"))
        with pytest.raises(ValueError):
            get_pretrain_dataset_dicts(_loader_cfg([labelled]))  # no cache anywhere
        dicts = get_pretrain_dataset_dicts(cfg)
        assert len(dicts) == 5
        assert dicts[-1] == {
            "file_name": str(tmp_path / "z.jpeg"),
            "image_id": 7,
            "proposal_cache": "c2",
            "proposal_key": "7",
        }
        assert dicts[0]["proposal_cache"] == "c1"
        caches = {"c1": cache, "c2": FakeProposalCache(["7"])}
        batch = next(iter(build_soco_pretrain_loader(cfg, proposal_caches=caches)))
        assert isinstance(batch, list) and len(batch) == 3
        for item in batch:
            assert [tuple(v.shape) for v in item["views"]] == [
                (3, 64, 64),
                (3, 64, 64),
                (3, 32, 32),
            ]
            assert [tuple(b.shape) for b in item["boxes"]] == [(4, 4)] * 3
    finally:
        DatasetCatalog.remove(folder)
        DatasetCatalog.remove(labelled)
