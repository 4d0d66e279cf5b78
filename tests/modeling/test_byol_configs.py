"""BYOL configs: the paper's recipe and the official per-epoch presets in the R-50 leaves, the
demo at the demo budget with the detector's backbone, and LARS with biases and norms excluded."""
from pathlib import Path

import pytest
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler

import soco_d2  # noqa: F401  (registers BYOL)
from soco_d2.engine import load_cfg
from soco_d2.solver import LARS, build_optimizer

REPO = Path(__file__).resolve().parents[2]
IMAGENET = 1_281_167
# epochs -> (lr per 256 images, weight decay, tau_base): byol/configs/byol.py presets
PRESETS = {100: (0.45, 1e-6, 0.99), 300: (0.3, 1e-6, 0.99), 1000: (0.2, 1.5e-6, 0.996)}


def _cfg(name, *opts):
    return load_cfg(str(REPO / name), ["MODEL.DEVICE", "cpu", *opts], num_train_images=IMAGENET,
                    register=False)


@pytest.mark.parametrize("epochs", sorted(PRESETS))
def test_r50_leaves_are_the_official_recipe(epochs):
    cfg = _cfg(f"configs/pretrain/byol_R50_{epochs}ep.yaml")
    m, s, i = cfg.MODEL, cfg.SOLVER, cfg.INPUT.SSL
    lr, wd, tau = PRESETS[epochs]
    assert m.META_ARCHITECTURE == "BYOL" and m.RESNETS.DEPTH == 50
    assert m.RESNETS.NORM == "SyncBN" and not m.RESNETS.STRIDE_IN_1X1 and m.BACKBONE.FREEZE_AT == 0
    assert (m.SSL.MOMENTUM, m.SSL.MOMENTUM_SCHEDULE) == (tau, "cosine")
    assert (m.SSL.MLP_HIDDEN_DIM, m.SSL.MLP_OUT_DIM, m.SSL.MLP_NORM) == (4096, 256, "SyncBN")
    assert not m.SSL.ZERO_INIT_RESIDUAL
    assert (s.OPTIMIZER, s.LARS_TRUST, s.MOMENTUM, s.WEIGHT_DECAY) == ("LARS", 1e-3, 0.9, wd)
    assert s.LARS_EXCLUDE_BIAS_AND_NORM and s.IMS_PER_BATCH == 4096
    assert s.BASE_LR == pytest.approx(lr * 4096 / 256)
    ipe = IMAGENET // 4096
    assert (s.MAX_ITER, s.WARMUP_ITERS, s.WARMUP_FACTOR) == (epochs * ipe, 10 * ipe, 0.0)
    assert s.LR_SCHEDULER_NAME == "WarmupCosineLR" and s.RESCALE_INTERVAL
    assert s.BASE_LR_END == 0.0 and not s.AMP.ENABLED
    assert tuple(i.VIEW_SIZES) == (224, 224) and tuple(i.CROP_SCALE) == (0.08, 1.0)
    assert tuple(i.CROP_RATIO) == pytest.approx((3 / 4, 4 / 3))
    assert tuple(i.COLOR_JITTER) == (0.4, 0.4, 0.2, 0.1) and i.COLOR_JITTER_PROB == 0.8
    assert i.GRAYSCALE_PROB == 0.2 and tuple(i.BLUR_SIGMA) == (0.1, 2.0)
    assert list(i.BLUR_PROB) == [1.0, 0.1] and list(i.SOLARIZE_PROB) == [0.0, 0.2]
    assert i.FLIP_PROB == 0.5 and cfg.INPUT.DATASET_MAPPER_NAME == "multi_view"
    assert cfg.DATASETS.TRAIN == ("imagenet_train_unlabeled",)


def test_demo_config_has_the_demo_budget_and_the_detector_backbone():
    cfg = _cfg("configs/demo/byol_R18_demo.yaml")
    moco = _cfg("configs/demo/mocov2_R18_demo.yaml")
    det = _cfg("configs/demo/mask_rcnn_R18_FPN_demo.yaml")
    s, i = cfg.SOLVER, cfg.INPUT.SSL
    # the images seen of the other demo pretrainings: 1000 iterations of 16, 64 px views
    assert (s.MAX_ITER, s.IMS_PER_BATCH) == (moco.SOLVER.MAX_ITER, moco.SOLVER.IMS_PER_BATCH)
    assert tuple(i.VIEW_SIZES) == tuple(moco.INPUT.SSL.VIEW_SIZES) == (64, 64)
    assert i.COLOR_JITTER[3] == 0.0 and i.GRAYSCALE_PROB == 0.0  # the classes differ by hue
    # the asymmetric views stay
    assert list(i.BLUR_PROB) == [1.0, 0.1] and list(i.SOLARIZE_PROB) == [0.0, 0.2]
    assert cfg.DATASETS.TRAIN == ("soco_demo_unlabeled",)
    for key in ("DEPTH", "RES2_OUT_CHANNELS", "STRIDE_IN_1X1", "NUM_GROUPS", "WIDTH_PER_GROUP"):
        assert cfg.MODEL.RESNETS[key] == det.MODEL.RESNETS[key], key


@pytest.mark.parametrize("name", ["configs/pretrain/byol_R18_tiny.yaml",
                                  "configs/demo/byol_R18_demo.yaml",
                                  "configs/pretrain/byol_R50_300ep.yaml"])
def test_lars_excludes_biases_and_norms_from_adaptation_and_decay(name):
    cfg = _cfg(name)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, LARS)
    adapted, excluded = opt.param_groups
    assert not adapted["lars_exclude"] and adapted["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY
    assert excluded["lars_exclude"] and excluded["weight_decay"] == 0.0
    # adapted: every conv weight and the two weights of each MLP (their last Linear has no bias)
    assert all(p.dim() > 1 for p in adapted["params"])
    assert all(p.dim() == 1 for p in excluded["params"])
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in model.target.parameters())
    build_lr_scheduler(cfg, opt)
    assert opt.param_groups[0]["lr"] == 0.0  # the warm-up starts from 0
