"""SoCoDatasetMapper: shapes through every stage, boxes that follow the pixels, fallbacks."""

import logging

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data.common import DatasetFromList, MapDataset
from PIL import Image

from soco_d2.config import add_ssl_config
from soco_d2.data.dataset_mappers import SoCoDatasetMapper

H, W = 96, 128


class FakeProposalCache:
    """Same get/find/info API as soco_d2.data.proposals.ProposalCache."""

    def __init__(self, boxes, sizes=None):
        self.boxes = {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in boxes.items()}
        self.sizes = sizes or {}

    def __contains__(self, key):
        return key in self.boxes

    def __len__(self):
        return len(self.boxes)

    def keys(self):
        return list(self.boxes)

    def get(self, key):
        return self.boxes[key]

    def resolve(self, key):
        if key in self.boxes:
            return key
        base = key.rsplit("/", 1)[-1]
        for k in self.boxes:
            if k.rsplit("/", 1)[-1] == base:
                return k
        raise KeyError(key)

    def info(self, key):
        w, h = self.sizes.get(key, (W, H))
        return {"rule": "fake", "width": w, "height": h}


def _cfg(sizes=(64, 64, 32), **soco):
    cfg = get_cfg()
    add_ssl_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.SSL.VIEW_SIZES = list(sizes)
    for k, v in soco.items():
        node = cfg.INPUT.SSL if k in cfg.INPUT.SSL else cfg.INPUT.SOCO
        assert k in node, k  # CfgNode would silently add a misspelt key
        setattr(node, k, v)
    return cfg


def _plain(**kw):
    """No colour, no jitter, no flip: pixels and boxes can be checked exactly."""
    base = dict(
        COLOR_JITTER_PROB=0.0,
        GRAYSCALE_PROB=0.0,
        BLUR_PROB=[0.0],
        SOLARIZE_PROB=[0.0],
        BOX_JITTER_PROB=0.0,
        FLIP_PROB=0.0,
    )
    base.update(kw)
    return base


def _write(tmp_path, name, img):
    path = tmp_path / name
    Image.fromarray(img).save(path)
    return str(path)


def _painted(tmp_path, box):
    """Black image with one white rectangle at ``box``."""
    img = np.zeros((H, W, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return _write(tmp_path, "painted.png", img)


def _mapper(cfg, cache):
    return SoCoDatasetMapper(cfg, True, proposal_caches=lambda path: cache)


def _dict(file_name, key="img.png"):
    return {"file_name": file_name, "image_id": key, "proposal_cache": "fake", "proposal_key": key}


VARIANTS = {
    "soco": ((64, 64, 32), {}),
    "soco_paper_v3": ((64, 64, 32), {"V3_MODE": "downsample"}),
    "soco_star": ((64, 64, 48, 32), {"DOWNSAMPLED_VIEW": 3}),
    "soco_c4": ((64, 64), {"CROP_SCALE": (0.6, 1.0)}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_contract_for_each_variant(tmp_path, variant):
    sizes, extra = VARIANTS[variant]
    rng = np.random.RandomState(0)
    path = _write(tmp_path, "img.png", rng.randint(0, 256, (H, W, 3), dtype=np.uint8))
    props = [
        [5, 5, 60, 50],
        [30, 20, 120, 90],
        [0, 0, 128, 96],
        [70, 10, 100, 40],
        [10, 60, 40, 90],
    ]
    cfg = _cfg(sizes, CUTOUT_PROB=0.5, **extra)
    mapper = _mapper(cfg, FakeProposalCache({"img.png": props}))
    for _ in range(5):
        out = mapper(_dict(path))
        assert set(out) == {"file_name", "image_id", "views", "boxes", "view_regions",
                            "view_flipped", "image_size"}
        assert out["image_id"] == "img.png" and out["file_name"] == path
        # V1 is the whole image; every view's region lies inside the image
        assert out["image_size"] == (H, W)
        assert out["view_regions"][0].tolist() == [0, 0, W, H]
        assert tuple(out["view_regions"].shape) == (len(sizes), 4)
        assert out["view_flipped"].dtype == torch.bool
        assert len(out["views"]) == len(out["boxes"]) == len(sizes)
        for view, boxes, s in zip(out["views"], out["boxes"], sizes):
            assert view.dtype == torch.uint8 and tuple(view.shape) == (3, s, s)
            assert view.is_contiguous()
            assert boxes.dtype == torch.float32 and tuple(boxes.shape) == (4, 4)
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= s).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_boxes_follow_pixels_in_every_view_including_flips(tmp_path):
    box = (40, 30, 100, 80)
    path = _painted(tmp_path, box)
    cfg = _cfg((64, 64, 32, 32), **_plain(FLIP_PROB=0.5, DOWNSAMPLED_VIEW=3))
    mapper = _mapper(cfg, FakeProposalCache({"img.png": [box]}))
    for _ in range(10):
        out = mapper(_dict(path))
        for view, boxes in zip(out["views"], out["boxes"]):
            img = view.float().mean(0)
            x1, y1, x2, y2 = boxes[0].tolist()
            inner = img[int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1]
            if inner.numel():
                assert inner.mean() > 220, (boxes[0], inner.mean())
            mask = torch.ones_like(img, dtype=torch.bool)
            mask[
                max(int(y1) - 1, 0) : int(np.ceil(y2)) + 1,
                max(int(x1) - 1, 0) : int(np.ceil(x2)) + 1,
            ] = False
            assert img[mask].mean() < 10  # nothing white outside the box
            assert (boxes == boxes[0]).all()  # one proposal, padded by duplicates


def test_v1_boxes_are_scaled_proposals_and_downsampled_view_halves_v2(tmp_path):
    rng = np.random.RandomState(1)
    path = _write(tmp_path, "img.png", rng.randint(0, 256, (H, W, 3), dtype=np.uint8))
    props = np.array([[0, 0, 64, 48], [32, 24, 128, 96]], np.float32)
    cfg = _cfg((64, 64, 48, 32), **_plain(DOWNSAMPLED_VIEW=3, CROP_SCALE=(0.9, 1.0)))
    out = _mapper(cfg, FakeProposalCache({"img.png": props}))(_dict(path))
    v1 = out["boxes"][0].numpy()
    scaled = props * np.array([64 / W, 64 / H] * 2, np.float32)
    assert {tuple(np.round(r, 3)) for r in v1} == {tuple(np.round(r, 3)) for r in scaled}
    np.testing.assert_allclose(out["boxes"][3].numpy() * 2, out["boxes"][1].numpy(), atol=1e-4)
    v2 = out["views"][1].float()
    v4 = out["views"][3].float()
    down = torch.nn.functional.avg_pool2d(v2[None], 2)[0]
    assert (v4 - down).abs().mean() < 2.0


def test_jitter_only_moves_v1_boxes(tmp_path):
    path = _painted(tmp_path, (10, 10, 90, 70))
    props = [[10, 10, 90, 70]]
    plain = _mapper(_cfg((64, 64), **_plain()), FakeProposalCache({"img.png": props}))
    np.random.seed(3)
    ref = plain(_dict(path))
    jit = _mapper(
        _cfg((64, 64), **_plain(BOX_JITTER_PROB=1.0, BOX_JITTER=0.1)),
        FakeProposalCache({"img.png": props}),
    )
    np.random.seed(3)
    out = jit(_dict(path))
    assert not torch.allclose(out["boxes"][0], ref["boxes"][0])
    torch.testing.assert_close(out["boxes"][1], ref["boxes"][1])  # same crop, unjittered box
    # V1 box moved by at most 10% of its size per side (plus scaling), clipped to the view.
    assert (out["boxes"][0] - ref["boxes"][0]).abs().max() < 0.25 * 64


def test_zero_proposals_use_whole_image(tmp_path):
    rng = np.random.RandomState(2)
    path = _write(tmp_path, "img.png", rng.randint(0, 256, (H, W, 3), dtype=np.uint8))
    out = _mapper(_cfg(**_plain()), FakeProposalCache({"img.png": np.zeros((0, 4))}))(_dict(path))
    for boxes, s in zip(out["boxes"], (64, 64, 32)):
        np.testing.assert_allclose(boxes.numpy(), np.tile([[0, 0, s, s]], (4, 1)), atol=1e-4)


def test_image_missing_from_cache_falls_back_and_logs(tmp_path, caplog):
    rng = np.random.RandomState(2)
    path = _write(tmp_path, "img.png", rng.randint(0, 256, (H, W, 3), dtype=np.uint8))
    mapper = _mapper(_cfg(**_plain()), FakeProposalCache({"other.png": [[0, 0, 5, 5]]}))
    out = mapper(_dict(path, key="img.png"))
    assert tuple(out["boxes"][0].shape) == (4, 4)
    np.testing.assert_allclose(out["boxes"][0][0].numpy(), [0, 0, 64, 64], atol=1e-4)


def test_basename_lookup_and_size_rescale(tmp_path):
    path = _painted(tmp_path, (40, 30, 100, 80))
    # Cache made on a 2x copy, keyed by basename (as the official JSON).
    cache = FakeProposalCache({"img.png": [[80, 60, 200, 160]]}, sizes={"img.png": (2 * W, 2 * H)})
    out = _mapper(_cfg(**_plain()), cache)(_dict(path, key="train/cls/img.png"))
    np.testing.assert_allclose(out["boxes"][0][0].numpy(), [20, 20, 50, 53.333], atol=1e-2)


def test_corrupt_image_is_skipped_and_map_dataset_retries(tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = _painted(tmp_path, (40, 30, 100, 80))
    cache = FakeProposalCache({"bad.jpg": [[0, 0, 10, 10]], "img.png": [[40, 30, 100, 80]]})
    mapper = _mapper(_cfg(**_plain()), cache)
    with caplog.at_level(logging.WARNING):
        assert mapper(_dict(str(bad), key="bad.jpg")) is None
    assert "bad.jpg" in caplog.text
    ds = MapDataset(DatasetFromList([_dict(str(bad), "bad.jpg"), _dict(good)], copy=False), mapper)
    out = ds[0]  # detectron2 retries another index instead of failing
    assert out is not None and out["file_name"] == good


def test_caches_are_opened_once_per_path(tmp_path):
    path = _painted(tmp_path, (40, 30, 100, 80))
    opened = []

    def open_cache(p):
        opened.append(p)
        return FakeProposalCache({"img.png": [[40, 30, 100, 80]]})

    mapper = SoCoDatasetMapper(_cfg(**_plain()), True, proposal_caches=open_cache)
    for _ in range(3):
        mapper(_dict(path))
    assert opened == ["fake"]
    by_mapping = SoCoDatasetMapper(
        _cfg(**_plain()),
        True,
        proposal_caches={"fake": FakeProposalCache({"img.png": [[0, 0, 9, 9]]})},
    )
    assert by_mapping(_dict(path)) is not None
