"""MoCo v2 configs: the official recipe in the R-50 leaves, the demo at the demo budget, and
every one builds a model and its optimizer."""
from pathlib import Path

import pytest
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler

import soco_d2  # noqa: F401  (registers MoCoV2)
from soco_d2.engine import load_cfg
from soco_d2.solver import build_optimizer

REPO = Path(__file__).resolve().parents[2]
IMAGENET = 1_281_167
CONFIGS = ["configs/pretrain/mocov2_R18_tiny.yaml", "configs/demo/mocov2_R18_demo.yaml",
           "configs/pretrain/mocov2_R50_200ep.yaml", "configs/pretrain/mocov2_R50_800ep.yaml"]


def _cfg(name):
    return load_cfg(str(REPO / name), ["MODEL.DEVICE", "cpu"], num_train_images=IMAGENET,
                    register=False)


@pytest.mark.parametrize("epochs", [200, 800])
def test_r50_leaves_are_the_official_recipe(epochs):
    cfg = _cfg(f"configs/pretrain/mocov2_R50_{epochs}ep.yaml")
    m, s, i = cfg.MODEL, cfg.SOLVER, cfg.INPUT.SSL
    assert m.META_ARCHITECTURE == "MoCoV2" and m.RESNETS.DEPTH == 50
    assert m.RESNETS.NORM == "BN" and not m.RESNETS.STRIDE_IN_1X1 and m.BACKBONE.FREEZE_AT == 0
    assert (m.MOCO.QUEUE_SIZE, m.MOCO.DIM, m.MOCO.TEMPERATURE) == (65536, 128, 0.2)
    assert (m.SSL.MOMENTUM, m.SSL.MOMENTUM_SCHEDULE) == (0.999, "constant")
    assert (m.SSL.MLP_HIDDEN_DIM, m.SSL.MLP_NORM) == (2048, "")
    assert (s.OPTIMIZER, s.IMS_PER_BATCH, s.BASE_LR, s.MOMENTUM) == ("SGD", 256, 0.03, 0.9)
    assert s.WEIGHT_DECAY == s.WEIGHT_DECAY_NORM == 1e-4 and s.WARMUP_ITERS == 0
    assert s.MAX_ITER == epochs * (IMAGENET // 256)
    assert s.LR_SCHEDULER_NAME == "WarmupCosineLR" and s.BASE_LR_END == 0.0
    assert tuple(i.VIEW_SIZES) == (224, 224) and tuple(i.CROP_SCALE) == (0.2, 1.0)
    assert tuple(i.COLOR_JITTER) == (0.4, 0.4, 0.4, 0.1) and i.COLOR_JITTER_PROB == 0.8
    assert i.GRAYSCALE_PROB == 0.2 and list(i.BLUR_PROB) == [0.5, 0.5]
    assert list(i.SOLARIZE_PROB) == [0.0, 0.0] and i.FLIP_PROB == 0.5
    assert cfg.DATASETS.TRAIN == ("imagenet_train_unlabeled",)


def test_demo_config_has_the_demo_budget_and_the_detector_backbone():
    cfg = _cfg("configs/demo/mocov2_R18_demo.yaml")
    det = _cfg("configs/demo/mask_rcnn_R18_FPN_demo.yaml")
    s, i = cfg.SOLVER, cfg.INPUT.SSL
    assert (s.MAX_ITER, s.IMS_PER_BATCH) == (1000, 16) and tuple(i.VIEW_SIZES) == (64, 64)
    assert cfg.MODEL.MOCO.QUEUE_SIZE % 16 == 0 and cfg.MODEL.MOCO.QUEUE_SIZE < 600
    assert i.COLOR_JITTER[3] == 0.0 and i.GRAYSCALE_PROB == 0.0  # the classes differ by hue
    assert cfg.DATASETS.TRAIN == ("soco_demo_unlabeled",)
    for key in ("DEPTH", "RES2_OUT_CHANNELS", "STRIDE_IN_1X1", "NUM_GROUPS", "WIDTH_PER_GROUP"):
        assert cfg.MODEL.RESNETS[key] == det.MODEL.RESNETS[key], key


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_model_optimizer_and_schedule(name):
    cfg = _cfg(name)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    # weight decay on every trained parameter, norms and biases included (official SGD)
    assert {g["weight_decay"] for g in opt.param_groups} == {1e-4}
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in model.target.parameters())
    build_lr_scheduler(cfg, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * (
        cfg.SOLVER.WARMUP_FACTOR if cfg.SOLVER.WARMUP_ITERS > 0 else 1.0))
    assert model.queue.queue.shape == (cfg.MODEL.MOCO.DIM, cfg.MODEL.MOCO.QUEUE_SIZE)
