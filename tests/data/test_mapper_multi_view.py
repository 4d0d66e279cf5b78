"""The multi-view mapper: views, and the geometry it reports for each view, match the pixels."""
import numpy as np
import pytest
import torch

from soco_d2.config import get_ssl_cfg
from soco_d2.data.dataset_mappers import (
    DATASET_MAPPER_REGISTRY,
    MultiViewDatasetMapper,
    build_dataset_mapper,
)
from soco_d2.data.build import get_pretrain_dataset_dicts

H, W = 90, 120


def _cfg(**ssl):
    cfg = get_ssl_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.DATASET_MAPPER_NAME = "multi_view"
    s = cfg.INPUT.SSL
    s.VIEW_SIZES = [48, 48]
    s.CROP_SCALE = (0.3, 1.0)
    s.COLOR_JITTER_PROB, s.GRAYSCALE_PROB, s.BLUR_PROB, s.SOLARIZE_PROB = 0.0, 0.0, [0.0], [0.0]
    for k, v in ssl.items():
        setattr(s, k, v)
    return cfg


def _coordinate_image():
    """R = x coordinate, G = y coordinate (scaled to 0..255), B = 0: pixels tell where they are."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([xs * 255 / (W - 1), ys * 255 / (H - 1), np.zeros_like(xs)], -1)
    return img.round().astype(np.uint8)


def test_registry_builds_the_named_mapper():
    assert isinstance(build_dataset_mapper(_cfg()), MultiViewDatasetMapper)
    cfg = _cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "nope"
    with pytest.raises(KeyError, match="INPUT.DATASET_MAPPER_NAME 'nope'"):
        build_dataset_mapper(cfg)
    assert "soco" in DATASET_MAPPER_REGISTRY and "multi_view" in DATASET_MAPPER_REGISTRY


@pytest.mark.parametrize("seed", range(6))
def test_regions_and_flips_describe_where_each_view_came_from(seed):
    np.random.seed(seed)
    mapper = build_dataset_mapper(_cfg(FLIP_PROB=0.5))
    out = mapper({"file_name": "coords.png", "image_id": 1, "image": _coordinate_image()})
    assert set(out) == {"file_name", "image_id", "views", "view_regions", "view_flipped",
                        "image_size"}
    assert out["image_size"] == (H, W) and "boxes" not in out
    for view, region, flipped in zip(out["views"], out["view_regions"], out["view_flipped"]):
        x0, y0, x1, y1 = region.tolist()
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        s = view.shape[-1]
        # the centre of view pixel (u, v) comes from this point of the original image
        u = np.arange(s) + 0.5
        src_x = x0 + u * (x1 - x0) / s - 0.5
        if flipped:
            src_x = src_x[::-1]
        src_y = y0 + u * (y1 - y0) / s - 0.5
        expected_r = src_x * 255 / (W - 1)
        expected_g = src_y * 255 / (H - 1)
        got_r = view[0].float().mean(0).numpy()  # mean over rows: R depends on x only
        got_g = view[1].float().mean(1).numpy()
        # the resize filter smooths a linear ramp into itself except near the borders
        np.testing.assert_allclose(got_r[2:-2], expected_r[2:-2], atol=4.0)
        np.testing.assert_allclose(got_g[2:-2], expected_g[2:-2], atol=4.0)


def test_flip_is_drawn_per_view():
    mapper = build_dataset_mapper(_cfg(FLIP_PROB=0.5, VIEW_SIZES=[32, 32, 32, 32]))
    np.random.seed(0)
    flips = torch.stack([
        mapper({"file_name": "c.png", "image_id": 0, "image": _coordinate_image()})["view_flipped"]
        for _ in range(20)
    ])
    assert flips.any() and not flips.all()
    assert (flips != flips[:, :1]).any()  # views of one image differ in some draws


def test_methods_without_proposals_need_no_cache(tmp_path):
    from detectron2.data import DatasetCatalog

    name = "multi_view_no_cache_test"
    DatasetCatalog.register(name, lambda: [{"file_name": "a.png", "image_id": "a.png"}])
    try:
        cfg = _cfg()
        cfg.DATASETS.TRAIN = (name,)
        assert get_pretrain_dataset_dicts(cfg) == [{"file_name": "a.png", "image_id": "a.png"}]
        cfg.INPUT.DATASET_MAPPER_NAME = "soco"
        with pytest.raises(ValueError, match="no proposal cache"):
            get_pretrain_dataset_dicts(cfg)
    finally:
        DatasetCatalog.remove(name)
