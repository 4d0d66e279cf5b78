"""Every pretraining config (every method) parses, resolves its schedule and builds model +
optimizer; SoCo's leaves also keep the official recipe."""
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler

import soco_d2  # noqa: F401  (registers SoCo)
from soco_d2.engine import load_cfg
from soco_d2.solver import LARS, build_optimizer

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "pretrain"
LEAVES = sorted(p.name for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("Base-"))
IMAGENET = 1_281_167


def test_expected_configs_exist():
    assert {
        "soco_R50_FPN_100ep.yaml", "soco_R50_FPN_400ep.yaml", "soco_star_R50_FPN_400ep.yaml",
        "soco_R50_C4_100ep.yaml", "soco_R18_FPN_tiny.yaml",
    } <= set(LEAVES)
    for p in CONFIG_DIR.glob("*.yaml"):
        assert "detectron2" not in p.read_text().split("_BASE_")[-1].splitlines()[0]


@pytest.mark.parametrize("name", LEAVES)
def test_config_parses_and_builds(name):
    cfg = load_cfg(str(CONFIG_DIR / name), ["MODEL.DEVICE", "cpu"], num_train_images=IMAGENET)
    s = cfg.SOLVER
    model = build_model(cfg)
    assert getattr(model, "is_pretraining", False)
    assert all(not p.requires_grad for p in model.target.parameters())
    opt = build_optimizer(cfg, model)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}
    if cfg.MODEL.META_ARCHITECTURE != "SoCo":
        return
    if "tiny" not in name:
        # Official recipe: batch 2048, lr 1.0 per 256, 10 warmup epochs, LARS + AMP.
        ipe = IMAGENET // 2048
        epochs = 400 if "400ep" in name else 100
        assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER) == (2048, 8.0, epochs * ipe)
        assert s.WARMUP_ITERS == 10 * ipe and s.AMP.ENABLED
        assert cfg.MODEL.RESNETS.DEPTH == 50 and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
    if cfg.MODEL.SOCO.HEAD_TYPE == "C4":
        assert hasattr(model.roi_heads, "res5") and hasattr(model.target.roi_heads, "res5")
    else:
        assert hasattr(model.roi_heads, "box_head")
    assert len(cfg.MODEL.SOCO.PAIRS) == len(cfg.INPUT.SSL.VIEW_SIZES) - 1
    assert isinstance(opt, LARS)
    excluded = [g for g in opt.param_groups if g["lars_exclude"]]
    assert len(excluded) == 1 and excluded[0]["weight_decay"] == 0.0
    sched = build_lr_scheduler(cfg, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(s.BASE_LR * s.WARMUP_FACTOR)
    del sched, model, opt
