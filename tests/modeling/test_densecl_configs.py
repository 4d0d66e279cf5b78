"""DenseCL's shipped configs keep the official recipe; the demo config keeps the demo budget."""
from pathlib import Path

import pytest

import soco_d2  # noqa: F401  (registers DenseCL's keys)
from soco_d2.engine import load_cfg

ROOT = Path(__file__).resolve().parents[2]
COCO_TRAIN2017 = 118_287
IMAGENET = 1_281_167


@pytest.mark.parametrize(
    "name, images, lr, epochs, dataset",
    [
        ("densecl_R50_imagenet_200ep.yaml", IMAGENET, 0.03, 200, "imagenet_train_unlabeled"),
        ("densecl_R50_coco_800ep.yaml", COCO_TRAIN2017, 0.3, 800, "coco_2017_train_unlabeled"),
    ],
)
def test_official_recipes(name, images, lr, epochs, dataset):
    cfg = load_cfg(str(ROOT / "configs/pretrain" / name), [], num_train_images=images,
                   register=False)
    m, s = cfg.MODEL, cfg.SOLVER
    assert m.META_ARCHITECTURE == "DenseCL" and cfg.DATASETS.TRAIN == (dataset,)
    assert (m.RESNETS.DEPTH, m.RESNETS.NORM, m.RESNETS.STRIDE_IN_1X1) == (50, "BN", False)
    assert (m.MOCO.QUEUE_SIZE, m.MOCO.DIM, m.MOCO.TEMPERATURE) == (65536, 128, 0.2)
    assert (m.DENSECL.LOSS_WEIGHT, m.DENSECL.WARMUP_ITERS) == (0.5, 0)
    assert (m.SSL.MOMENTUM, m.SSL.MOMENTUM_SCHEDULE) == (0.999, "constant")
    assert (m.SSL.MLP_HIDDEN_DIM, m.SSL.MLP_NORM) == (2048, "")
    assert (s.OPTIMIZER, s.IMS_PER_BATCH, s.MOMENTUM, s.WEIGHT_DECAY) == ("SGD", 256, 0.9, 1e-4)
    assert s.BASE_LR == pytest.approx(lr)
    assert s.MAX_ITER == epochs * (images // 256) and s.WARMUP_ITERS == 0
    assert s.LR_SCHEDULER_NAME == "WarmupCosineLR" and s.BASE_LR_END == 0.0
    i = cfg.INPUT.SSL
    assert list(i.VIEW_SIZES) == [224, 224] and tuple(i.CROP_SCALE) == (0.2, 1.0)
    assert tuple(i.COLOR_JITTER) == (0.4, 0.4, 0.4, 0.1) and i.GRAYSCALE_PROB == 0.2
    assert list(i.BLUR_PROB) == [0.5, 0.5] and list(i.SOLARIZE_PROB) == [0.0, 0.0]


def test_demo_config_matches_the_demo_budget_and_detector():
    demo = load_cfg(str(ROOT / "configs/demo/densecl_R18_demo.yaml"), [], register=False)
    soco = load_cfg(str(ROOT / "configs/demo/soco_R18_FPN_demo.yaml"), [], register=False)
    det = load_cfg(str(ROOT / "configs/demo/mask_rcnn_R18_FPN_demo.yaml"), [], register=False)
    assert demo.MODEL.META_ARCHITECTURE == "DenseCL"
    assert demo.SOLVER.MAX_ITER * demo.SOLVER.IMS_PER_BATCH == 16000
    assert (demo.SOLVER.MAX_ITER, demo.SOLVER.IMS_PER_BATCH) == (
        soco.SOLVER.MAX_ITER, soco.SOLVER.IMS_PER_BATCH)
    assert set(demo.INPUT.SSL.VIEW_SIZES) == {64} and demo.DATASETS.TRAIN == soco.DATASETS.TRAIN
    # hue and grayscale stay off: the demo's classes differ by hue
    assert demo.INPUT.SSL.COLOR_JITTER[3] == 0.0 and demo.INPUT.SSL.GRAYSCALE_PROB == 0.0
    for key in ("DEPTH", "RES2_OUT_CHANNELS", "STRIDE_IN_1X1"):
        assert demo.MODEL.RESNETS[key] == det.MODEL.RESNETS[key] == soco.MODEL.RESNETS[key], key
    assert demo.MODEL.MOCO.QUEUE_SIZE % demo.SOLVER.IMS_PER_BATCH == 0
    assert demo.SOLVER.IMS_PER_BATCH % demo.MODEL.MOCO.SPLIT_BN == 0
