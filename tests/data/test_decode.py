"""The loader's data path: JPEG decoding equal to detectron2's, reduced-size decode of large
JPEGs (same geometry, views within resampling noise), batches packed into shared memory."""
import io

import cv2
import numpy as np
import pytest
import torch
from detectron2.data.detection_utils import read_image as d2_read_image
from detectron2.data.transforms import CropTransform, ResizeTransform, TransformList
from PIL import Image

from soco_d2.config import get_ssl_cfg
from soco_d2.data.build import pack_batch
from soco_d2.data.dataset_mappers import build_dataset_mapper
from soco_d2.data.decode import jpeg_header, read_image
from soco_d2.data.views import apply_image


def _photo(h=150, w=200, noise=20, blob=8):
    """Colour blobs about ``blob`` px across, plus per-pixel noise of +-``noise``."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (h // blob, w // blob, 3), np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img.astype(int) + rng.integers(-noise, noise + 1, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(path, img, mode="RGB", **kw):
    Image.fromarray(img).convert(mode).save(path, **kw)
    return str(path)


@pytest.mark.parametrize("fmt", ["RGB", "BGR"])
def test_read_image_equals_detectron2(tmp_path, fmt):
    img = _photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the decoders must turn it upright alike
    files = {
        "ycbcr.jpg": _save(tmp_path / "ycbcr.jpg", img, quality=90),
        "progressive.jpg": _save(tmp_path / "p.jpg", img, quality=80, progressive=True),
        "gray.jpg": _save(tmp_path / "gray.jpg", img, "L", quality=90),
        "cmyk.jpg": _save(tmp_path / "cmyk.jpg", img, "CMYK", quality=90),
        "rotated.jpg": _save(tmp_path / "rot.jpg", img, quality=90, exif=exif.tobytes()),
        "png": _save(tmp_path / "x.png", img),
    }
    for name, path in files.items():
        ours, size, k = read_image(path, fmt)
        ref = d2_read_image(path, format=fmt)
        assert k == 1 and size == ref.shape[:2], name
        np.testing.assert_array_equal(ours, ref, err_msg=name)
    assert read_image(files["rotated.jpg"], fmt)[0].shape[:2] == (200, 150)
    with open(files["ycbcr.jpg"], "rb") as f:
        assert jpeg_header(f.read()) == (150, 200, 3)
    assert jpeg_header(b"\x89PNG....") == (0, 0, 0)


def _cfg(mapper, sizes, draft, scale=(0.5, 1.0)):
    cfg = get_ssl_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    s = cfg.INPUT.SSL
    s.VIEW_SIZES, s.CROP_SCALE, s.DRAFT_DECODE = sizes, scale, draft
    # no colour: the views then differ only by the decode and the resampling
    s.COLOR_JITTER_PROB, s.GRAYSCALE_PROB, s.BLUR_PROB, s.SOLARIZE_PROB = 0.0, 0.0, [0.0], [0.0]
    cfg.INPUT.SOCO.CUTOUT_PROB = 0.0
    return cfg


def test_draft_reduction_keeps_every_view_at_least_view_sized():
    soco = build_dataset_mapper(_cfg("soco", [224, 224, 112], True), True)
    moco = build_dataset_mapper(_cfg("multi_view", [224, 224], True, (0.2, 1.0)), True)
    assert soco.draft_reduction(375, 500) == 1 == moco.draft_reduction(375, 500)  # ImageNet
    # smallest crop side at 2000x1500: SoCo (scale 0.5) 1060 px -> 4x, MoCo (0.2) 670 -> 2x
    assert soco.draft_reduction(1500, 2000) == 4 and moco.draft_reduction(1500, 2000) == 2
    assert build_dataset_mapper(_cfg("soco", [224, 224, 112], False), True).draft_reduction(
        1500, 2000) == 1
    detco = _cfg("detco", [224, 224], True, (0.2, 1.0))
    assert build_dataset_mapper(detco, True).draft_reduction(3000, 4000) == 1  # jigsaw: full


@pytest.mark.parametrize("mapper,sizes", [("soco", [224, 224, 112]), ("multi_view", [224, 224])])
def test_draft_decoded_views_match_full_decode(tmp_path, mapper, sizes):
    # detail the views resolve: finer detail aliases in the full-size path's bilinear first
    # step (4.5x shrink for V1), which the reduced decode averages instead
    path = _save(tmp_path / "big.jpg", _photo(1500, 2000, noise=0, blob=48), quality=90)
    d = {"file_name": path, "image_id": "big.jpg",
         "proposals": np.array([[100, 80, 1400, 1200], [600, 300, 1900, 1400],
                                [50, 500, 900, 1450]], np.float32)}
    outs = []
    for draft in (True, False):
        np.random.seed(7)
        m = build_dataset_mapper(_cfg(mapper, sizes, draft), True)
        outs.append([m(dict(d)) for _ in range(4)])
    assert m.draft_reduction(1500, 2000) == 1  # the second mapper: off
    for a, b in zip(*outs):
        # the same draws: identical geometry in full-size pixels
        assert a["image_size"] == b["image_size"] == (1500, 2000)
        torch.testing.assert_close(a["view_regions"], b["view_regions"])
        assert torch.equal(a["view_flipped"], b["view_flipped"])
        for ba, bb in zip(a.get("boxes", []), b.get("boxes", [])):
            torch.testing.assert_close(ba, bb)
        for va, vb in zip(a["views"], b["views"]):
            diff = (va.float() - vb.float()).abs()
            assert diff.mean() < 1.0 and diff.max() <= 6, (diff.mean(), diff.max())  # 0.45, 4


def _view(x0, y0, w, h, side=96):
    return TransformList([CropTransform(x0, y0, w, h), ResizeTransform(h, w, side, side)])


def test_reduced_image_geometry_is_exact():
    """A 4x area-reduced image, resampled through apply_image(reduction=4), gives the view the
    full image gives: a pattern of period 40 px would show a one-pixel shift."""
    ys, xs = np.mgrid[0:800, 0:1200].astype(np.float32)
    img = 127.5 + 100 * np.sin(xs / 40 * 2 * np.pi)[..., None] * np.cos(ys / 56 * 2 * np.pi)[
        ..., None]
    img = np.repeat(img, 3, 2).round().astype(np.uint8)
    small = cv2.resize(img, (300, 200), interpolation=cv2.INTER_AREA)
    for x0, y0, w, h in ((0, 0, 1200, 800), (333, 121, 610, 517), (5, 402, 401, 397)):
        full = apply_image(_view(x0, y0, w, h), img).astype(float)
        diffs = [np.abs(full - apply_image(_view(x0 + dx, y0, w, h), small, 4)).mean()
                 for dx in (-1, 0, 1)]  # the region named 1 px off, and right
        assert diffs[1] < 3.0 and min(diffs[0], diffs[2]) > 2 * diffs[1], (x0, y0, diffs)
    with pytest.raises(ValueError, match="crop and resize"):
        apply_image(TransformList([ResizeTransform(800, 1200, 96, 96)] * 2), small, 4)


def test_pack_batch_shares_one_buffer_per_dtype():
    batch = [{"views": [torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8) for _ in range(3)],
              "boxes": [torch.rand(4, 4), torch.rand(2, 4)], "view_flipped": torch.tensor([1, 0]),
              "image_size": (5, 6), "file_name": f"f{i}"} for i in range(3)]
    packed = pack_batch(batch)
    for a, b in zip(batch, packed):
        assert a.keys() == b.keys() and a["image_size"] == b["image_size"]
        for key in ("views", "boxes"):
            assert all(torch.equal(x, y) for x, y in zip(a[key], b[key]))
        assert torch.equal(a["view_flipped"], b["view_flipped"])
    storages = {t.untyped_storage().data_ptr() for x in packed
                for t in [*x["views"], *x["boxes"], x["view_flipped"]]}
    assert len(storages) == 3  # uint8, float32, int64
    assert all(t.is_shared() for t in packed[0]["views"])


def test_loader_workers_send_packed_batches(tmp_path):
    """With a worker, build_pretrain_loader collates with pack_batch: a batch arrives as one
    shared buffer per dtype, with the values the mapper made."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from soco_d2.data.build import build_pretrain_loader
    from soco_d2.data.datasets import register_image_folder

    for i in range(4):
        _save(tmp_path / f"{i}.jpg", _photo(60, 80), quality=90)
    name = f"packed_loader_{abs(hash(str(tmp_path))) % 10**8}"
    register_image_folder(name, str(tmp_path))
    try:
        cfg = _cfg("multi_view", [32, 32], True)
        cfg.DATASETS.TRAIN, cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = (name,), 4, 1
        batch = next(iter(build_pretrain_loader(cfg)))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert len(batch) == 4 and all(x["views"][0].shape == (3, 32, 32) for x in batch)
    uint8 = {v.untyped_storage().data_ptr() for x in batch for v in x["views"]}
    assert len(uint8) == 1 and batch[0]["views"][0].is_shared()
