"""configs/small/: the pretraining recipes for small real unlabeled sets (NEON tree crowns).

Each recipe keeps the detector's architecture keys (so its weights transfer), the same budget of
images seen as every other recipe, and views at the detector's object scale; its header states
what was tuned, on which data, over how many runs, and the budget.
"""
import glob
import math
import os

import pytest

from soco_d2.engine import load_cfg

from _paths import CONFIGS

SMALL = sorted(glob.glob(os.path.join(CONFIGS, "small", "*.yaml")))
DETECTOR = os.path.join(CONFIGS, "real", "faster_rcnn_R18_FPN_neon_trees_lowlabel.yaml")


def _cfg(path):
    return load_cfg(path, ["MODEL.DEVICE", "cpu"], register=False)


def _header(path):
    lines = []
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines).lower()


def _view_scales(cfg, tile):
    """Each view's scale against the tile's native pixels: view side / mean source side."""
    i = cfg.INPUT.SSL
    crop_side = tile * math.sqrt(sum(i.CROP_SCALE) / 2)  # the mean crop area's side
    if cfg.MODEL.META_ARCHITECTURE == "SoCo":
        # V1 is the whole tile, V2 a crop (INPUT.SOCO.V3_MODE "crop"); V3, SoCo's small view,
        # is half of V2 by design and not held to the detector's scale
        assert cfg.INPUT.SOCO.V3_MODE == "crop"
        return [i.VIEW_SIZES[0] / tile] + [s / crop_side for s in i.VIEW_SIZES[1:2]]
    scales = [s / crop_side for s in i.VIEW_SIZES]
    if cfg.MODEL.META_ARCHITECTURE == "DetCo":
        d = cfg.INPUT.DETCO
        scales.append(d.JIGSAW_SIZE / (tile * math.sqrt(sum(d.JIGSAW_CROP_SCALE) / 2)))
    return scales


def test_one_recipe_per_resnet_method():
    names = {os.path.basename(p) for p in SMALL}
    assert {"soco_R18_FPN_neon.yaml", "mocov2_R18_neon.yaml", "densecl_R18_neon.yaml",
            "detco_R18_neon.yaml"} <= names


@pytest.mark.parametrize("path", SMALL, ids=os.path.basename)
def test_recipe_transfers_to_the_neon_detector_at_its_object_scale(path):
    cfg, det = _cfg(path), _cfg(DETECTOR)
    assert cfg.DATASETS.TRAIN == ("neon_trees_unlabeled",)
    for key in ("DEPTH", "RES2_OUT_CHANNELS", "STRIDE_IN_1X1", "NUM_GROUPS", "WIDTH_PER_GROUP"):
        assert cfg.MODEL.RESNETS[key] == det.MODEL.RESNETS[key], key
    if cfg.MODEL.META_ARCHITECTURE == "SoCo":
        assert cfg.MODEL.FPN.OUT_CHANNELS == det.MODEL.FPN.OUT_CHANNELS
    # the detector sees the tiles at their native scale (short side MIN_SIZE_TEST); the demo
    # recipes' views shrank them to 0.33-0.45 of it, so crowns (median 40 px) became 13-18 px
    tile = det.INPUT.MIN_SIZE_TEST
    for scale in _view_scales(cfg, tile):
        assert 0.5 <= scale <= 2.0, (path, scale)


def test_every_recipe_sees_the_same_number_of_images():
    solvers = {os.path.basename(p): _cfg(p).SOLVER for p in SMALL}
    seen = {name: s.MAX_ITER * s.IMS_PER_BATCH for name, s in solvers.items()}
    assert len(set(seen.values())) == 1, seen


@pytest.mark.parametrize("path", SMALL, ids=os.path.basename)
def test_header_states_tuning_data_runs_and_budget(path):
    head = _header(path)
    for word in ("tuned", "neon", "over", "run", "images seen", "wall"):
        assert word in head, (path, word)
