"""DetCoDatasetMapper: patches show the cells of their view, outputs describe the geometry."""
import numpy as np
import pytest
from detectron2.data.transforms import CropTransform, HFlipTransform, ResizeTransform, TransformList
from PIL import Image

from soco_d2.config import get_ssl_cfg
from soco_d2.data.dataset_mappers import build_dataset_mapper
from soco_d2.data.views import apply_image

# 3x3 blocks of 30 px, block k painted with colour (10 k, 255 - 10 k, 7 k).
BLOCK_COLOURS = np.array([[10 * k, 255 - 10 * k, 7 * k] for k in range(9)], dtype=np.uint8)


def _blocks_image(path):
    cell_of = np.arange(90) // 30
    image = BLOCK_COLOURS[cell_of[:, None] * 3 + cell_of[None, :]]
    Image.fromarray(image).save(path)
    return {"file_name": str(path), "image_id": 0}


def _cfg(whole_view=True, colour=False, **detco):
    cfg = get_ssl_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.DATASET_MAPPER_NAME = "detco"
    cfg.INPUT.SSL.VIEW_SIZES = [32, 32]
    if whole_view:  # every view is the whole (square) image
        cfg.INPUT.SSL.CROP_SCALE = (1.0, 1.0)
        cfg.INPUT.SSL.CROP_RATIO = (1.0, 1.0)
    cfg.INPUT.SSL.COLOR_JITTER_PROB = 1.0 if colour else 0.0
    cfg.INPUT.SSL.COLOR_JITTER = (0.4, 0.0, 0.0, 0.0)
    cfg.INPUT.SSL.GRAYSCALE_PROB = 0.0
    cfg.INPUT.SSL.BLUR_PROB = [0.0, 0.0]
    cfg.INPUT.SSL.SOLARIZE_PROB = [0.0, 0.0]
    cfg.INPUT.DETCO.JIGSAW_SIZE = 36
    cfg.INPUT.DETCO.PATCH_SIZE = 10
    for k, v in detco.items():
        setattr(cfg.INPUT.DETCO, k, v)
    return cfg


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_patch_k_is_cell_k_of_its_view(tmp_path, flip):
    d = _blocks_image(tmp_path / "blocks.png")
    cfg = _cfg()
    cfg.INPUT.SSL.FLIP_PROB = flip
    out = build_dataset_mapper(cfg)(d)
    assert len(out["views"]) == 2 and tuple(out["views"][0].shape) == (3, 32, 32)
    for v in range(2):
        patches = out["jigsaw"][v]
        assert tuple(patches.shape) == (9, 3, 10, 10)
        assert bool(out["jigsaw_flipped"][v]) == bool(flip) == bool(out["view_flipped"][v])
        for k in range(9):
            r, c = divmod(k, 3)
            block = r * 3 + (2 - c if flip else c)  # a flipped view mirrors its columns
            expected = BLOCK_COLOURS[block].reshape(3, 1, 1)
            assert (patches[k].numpy() == expected).all(), (v, k)


def test_outputs_reproduce_the_patches(tmp_path):
    """Region + flip + boxes rebuild every patch from the original image, for both sources."""
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "noise.png")
    d = {"file_name": str(tmp_path / "noise.png"), "image_id": 1}
    for source in ("view", "crop"):
        cfg = _cfg(whole_view=False, JIGSAW_SOURCE=source)
        mapper = build_dataset_mapper(cfg)
        for _ in range(3):
            out = mapper(d)
            if source == "view":  # the jigsaw is its global view's crop, flipped with it
                assert (out["jigsaw_regions"] == out["view_regions"]).all()
                assert (out["jigsaw_flipped"] == out["view_flipped"]).all()
            for v in range(2):
                x0, y0, x1, y1 = out["jigsaw_regions"][v].round().int().tolist()
                steps = [CropTransform(x0, y0, x1 - x0, y1 - y0),
                         ResizeTransform(y1 - y0, x1 - x0, 36, 36)]
                if out["jigsaw_flipped"][v]:
                    steps.append(HFlipTransform(36))
                crop = apply_image(TransformList(steps), image)
                for k, (a, b, c, e) in enumerate(out["jigsaw_boxes"][v].int().tolist()):
                    assert c - a == e - b == 10
                    # inside cell k of the 12 px grid, row-major
                    assert a // 12 == k % 3 and b // 12 == k // 3 and (c - 1) // 12 == k % 3
                    expected = crop[b:e, a:c].transpose(2, 0, 1)
                    assert (out["jigsaw"][v][k].numpy() == expected).all(), (source, v, k)


@pytest.mark.parametrize("mode,distinct", [("patch", True), ("jigsaw", False)])
def test_patch_colour_is_drawn_per_patch_or_per_jigsaw(tmp_path, mode, distinct):
    Image.fromarray(np.full((60, 60, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    d = {"file_name": str(tmp_path / "grey.png"), "image_id": 2}
    out = build_dataset_mapper(_cfg(colour=True, PATCH_COLOR=mode))(d)
    levels = {int(p[0, 0, 0]) for p in out["jigsaw"][0]}  # brightness of each (flat) patch
    assert (len(levels) > 1) == distinct, levels


def test_bad_jigsaw_settings_name_their_key(tmp_path):
    with pytest.raises(ValueError, match="JIGSAW_SOURCE"):
        build_dataset_mapper(_cfg(JIGSAW_SOURCE="image"))
    with pytest.raises(ValueError, match="PATCH_SIZE=13"):
        build_dataset_mapper(_cfg(PATCH_SIZE=13))
    cfg = _cfg()
    cfg.INPUT.SSL.VIEW_SIZES = [32, 32, 16]
    with pytest.raises(ValueError, match="exactly 2 global views"):
        build_dataset_mapper(cfg)
