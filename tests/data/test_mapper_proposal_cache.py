"""Integration: a real ProposalCache (write_cache) read by datasets, mapper and loader."""

import numpy as np
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from soco_d2.config import add_ssl_config
from soco_d2.data.build import attach_proposals, build_pretrain_loader
from soco_d2.data.datasets import register_image_folder
from soco_d2.data.dataset_mappers import SoCoDatasetMapper
from soco_d2.data.proposals import ProposalCache, write_cache


def test_real_cache_through_dataset_mapper_and_loader(tmp_path):
    root = tmp_path / "images"
    (root / "cls").mkdir(parents=True)
    img = np.zeros((48, 64, 3), np.uint8)
    img[8:40, 16:48] = 255  # the one proposal of a.jpg, painted white
    Image.fromarray(img).save(root / "cls" / "a.png")
    Image.fromarray(img).save(root / "cls" / "b.png")
    cache_path = str(tmp_path / "proposals")
    write_cache(
        cache_path,
        {
            "cls/a.png": dict(boxes=np.array([[16, 8, 48, 40]]), width=64, height=48, rule="t"),
            # Official-JSON style key (stem only): matched by basename.
            "b": dict(boxes=np.array([[16, 8, 48, 40]]), width=64, height=48, rule="t"),
        },
    )
    name = "test_soco_real_cache"
    register_image_folder(name, str(root), cache_path)
    try:
        dicts = DatasetCatalog.get(name)
        assert [d["image_id"] for d in dicts] == ["cls/a.png", "cls/b.png"]
        assert MetadataCatalog.get(name).proposal_cache == cache_path

        cfg = get_cfg()
        add_ssl_config(cfg)
        cfg.INPUT.FORMAT = "RGB"
        cfg.INPUT.SSL.VIEW_SIZES = [64, 64, 32]
        cfg.INPUT.SSL.COLOR_JITTER_PROB = 0.0
        cfg.INPUT.SSL.GRAYSCALE_PROB = 0.0
        cfg.INPUT.SSL.BLUR_PROB = [0.0]
        cfg.INPUT.SSL.SOLARIZE_PROB = [0.0]
        cfg.INPUT.SOCO.BOX_JITTER_PROB = 0.0
        cfg.INPUT.DATASET_MAPPER_NAME = "soco"
        mapper = SoCoDatasetMapper(cfg, True)  # opens ProposalCache itself
        # the folder dataset lists images only; the loader attaches the cache for SoCo
        dicts = attach_proposals(dicts, cache_path, name)
        # each image carries the cache's own key, so the mapper's lookup is exact
        assert [d["proposal_key"] for d in dicts] == ["cls/a.png", "b"]
        for d in dicts:
            out = mapper(d)
            v1 = out["boxes"][0].numpy()
            flipped = v1[0, 0] > 20  # V1 may be flipped: x1 = 64 - 48 or 16
            expected = [16, 32 * 8 / 48 * 2, 48, 32 * 40 / 48 * 2]
            if flipped:
                expected = [64 - 48, expected[1], 64 - 16, expected[3]]
            np.testing.assert_allclose(v1, np.tile([expected], (4, 1)), atol=1e-3)
            for view, boxes in zip(out["views"], out["boxes"]):
                x1, y1, x2, y2 = boxes[0].round().int().tolist()
                assert view[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].float().mean() > 220
        assert isinstance(mapper._caches[cache_path], ProposalCache)

        cfg.DATASETS.TRAIN = (name,)
        cfg.SOLVER.IMS_PER_BATCH = 2
        cfg.DATALOADER.NUM_WORKERS = 0
        batch = next(iter(build_pretrain_loader(cfg)))
        assert len(batch) == 2 and all(len(x["views"]) == 3 for x in batch)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
