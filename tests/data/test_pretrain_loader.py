"""The pretraining loader: proposals attached only for mappers that use them, uncovered images
dropped with a logged count, caches per dataset."""
import logging

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from soco_d2.config import get_ssl_cfg
from soco_d2.data.build import build_pretrain_loader, get_pretrain_dataset_dicts
from soco_d2.data.datasets import register_image_folder
from soco_d2.data.proposals.cache import write_cache
from _data import write_random_images


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "imgs"
    write_random_images(root, height=48, width=64, names=("a.png", "b.png", "sub/c.png"))
    cache = str(tmp_path / "cache.bin")
    box = np.array([[4, 4, 40, 30]], np.float32)
    # the cache knows a.png and sub/c.png only
    write_cache(cache, {k: dict(boxes=box, width=64, height=48, rule="t")
                        for k in ("a.png", "sub/c.png")})
    name = f"loader_test_{abs(hash(str(tmp_path))) % 10**8}"
    register_image_folder(name, str(root), cache)
    yield name, str(root), cache
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _cfg(name, mapper):
    cfg = get_ssl_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.INPUT.SSL.VIEW_SIZES = [32, 32, 32] if mapper == "soco" else [32, 32]
    cfg.DATASETS.TRAIN = (name,)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def test_proposal_mapper_gets_caches_and_uncovered_images_are_dropped(folder, caplog):
    name, root, cache = folder
    with caplog.at_level(logging.WARNING, logger="soco_d2.data.build"):
        dicts = get_pretrain_dataset_dicts(_cfg(name, "soco"))
    assert [d["image_id"] for d in dicts] == ["a.png", "sub/c.png"]
    assert all(d["proposal_cache"] == cache for d in dicts)
    assert [d["proposal_key"] for d in dicts] == ["a.png", "sub/c.png"]
    assert "1 of 3 images" in caplog.text and "b.png" in caplog.text
    batch = next(iter(build_pretrain_loader(_cfg(name, "soco"))))
    assert len(batch) == 2 and all(len(x["boxes"]) == 3 for x in batch)


def test_mapper_without_proposals_reads_every_image_and_no_cache(folder):
    name, _, _ = folder
    dicts = get_pretrain_dataset_dicts(_cfg(name, "multi_view"))
    assert [d["image_id"] for d in dicts] == ["a.png", "b.png", "sub/c.png"]
    assert not any("proposal_cache" in d for d in dicts)
    batch = next(iter(build_pretrain_loader(_cfg(name, "multi_view"))))
    assert len(batch) == 2 and all("boxes" not in x for x in batch)


def test_proposal_caches_key_overrides_metadata_and_must_match_datasets(folder, tmp_path):
    name, _, _ = folder
    cfg = _cfg(name, "soco")
    cfg.DATASETS.SSL.PROPOSAL_CACHES = (str(tmp_path / "missing.bin"),)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        get_pretrain_dataset_dicts(cfg)
    cfg.DATASETS.SSL.PROPOSAL_CACHES = ("a", "b")
    with pytest.raises(ValueError, match="one per dataset"):
        get_pretrain_dataset_dicts(cfg)
