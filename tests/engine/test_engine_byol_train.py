"""The Trainer on the tiny BYOL config: real loader end to end with LARS and the cosine EMA,
learning on a fixed batch, exact resume, and a checkpoint that converts with
tools/convert_pretrained.py into the demo Mask R-CNN R-18 FPN with its backbone fully loaded."""
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import soco_d2  # noqa: F401  (registers BYOL)
from soco_d2.checkpoint import load_detector_cfg
from soco_d2.engine import Trainer
from soco_d2.solver.lars import LARS
from _train import (
    CONFIGS,
    assert_finite_losses,
    assert_resume_is_exact,
    fixed_batch_trainer,
    load_final_checkpoint,
    start,
    tiny_cfg,
    train_fixed_batch,
    write_random_images,
)

TINY = str(CONFIGS / "pretrain/byol_R18_tiny.yaml")
DETECTOR = str(CONFIGS / "demo/mask_rcnn_R18_FPN_demo.yaml")
FixedBatchTrainer = fixed_batch_trainer()


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    """``(out_dir, *opts) -> cfg`` on six 96x80 random-texture images, no proposal cache (BYOL
    reads none)."""
    return partial(tiny_cfg, TINY, write_random_images(tmp_path_factory.mktemp("byol_imgs")))


@pytest.fixture(scope="module")
def trained(make_cfg, tmp_path_factory):
    """A 3-iteration run of the tiny config through the real loader: ``(trainer, out_dir)``."""
    out = tmp_path_factory.mktemp("byol_run")
    trainer = start(Trainer, make_cfg(out, "SOLVER.MAX_ITER", "3"))
    trainer.train()
    return trainer, out


def test_tiny_config_trains_with_real_loader(trained):
    trainer, out = trained
    assert_finite_losses(trainer, 3)
    assert trainer.storage.history("byol/projection_std").values()
    assert isinstance(trainer.optimizer, LARS)
    # the EMA hook followed BYOL's cosine schedule from tau_base 0.99 over the 3 iterations
    momenta = [v for v, _ in trainer.storage.history("ema_momentum").values()]
    expected = [1 - 0.01 * (math.cos(math.pi * k / 3) + 1) / 2 for k in range(3)]
    assert momenta == pytest.approx(expected)
    keys = load_final_checkpoint(out)["model"].keys()
    assert any(k.startswith("target.backbone.res5.") for k in keys)
    assert any(k.startswith("target.projector.") for k in keys)
    assert any(k.startswith("predictor.") for k in keys)
    assert not any(k.startswith("target.predictor.") for k in keys)
    ckpt = load_final_checkpoint(out)
    assert ckpt["iteration"] == 2
    assert ckpt["trainer"]["_trainer"]["optimizer"]["state"]  # LARS momentum buffers


def test_checkpoint_converts_into_the_demo_detector(trained, tmp_path, load_script, capsys):
    _, out = trained
    ckpt, weights = str(Path(out) / "model_final.pth"), str(tmp_path / "byol.pkl")
    cli = load_script("tools/convert_pretrained.py")
    assert cli.main([ckpt, weights, "--config-file", DETECTOR]) == 0
    printed = capsys.readouterr().out
    assert "layout: soco_d2, detector: fpn" in printed
    # the projector, the predictor and the whole target are dropped, not transferred
    assert "target.*" in printed and "projector.*" in printed and "predictor.*" in printed

    torch.manual_seed(0)
    detector = build_model(load_detector_cfg(DETECTOR))
    DetectionCheckpointer(detector).load(weights)
    # every tensor of the detector's ResNet now holds the ONLINE backbone's value
    online = load_final_checkpoint(out)["model"]
    resnet = {k[len("backbone.bottom_up."):]: v for k, v in detector.state_dict().items()
              if k.startswith("backbone.bottom_up.") and not k.endswith("num_batches_tracked")}
    assert len(resnet) == 100  # 20 convolutions: weight, norm weight, bias, mean, var
    for k, v in resnet.items():
        torch.testing.assert_close(v, online["backbone." + k], rtol=0, atol=0, msg=k)
    assert not torch.equal(online["backbone.stem.conv1.weight"],
                           online["target.backbone.stem.conv1.weight"])


def test_few_iterations_reduce_loss_on_fixed_batch(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "100")
    losses = train_fixed_batch(FixedBatchTrainer, cfg)
    # iteration 0 has lr 0 (warm-up from 0, as the official schedule)
    assert losses[-1] < losses[1] - 0.1, losses


def test_resume_after_kill_matches_uninterrupted(make_cfg, tmp_path):
    def lars_buffers_came_back(resumed):
        assert resumed.optimizer.state  # restored with the weights

    assert_resume_is_exact(FixedBatchTrainer, make_cfg, tmp_path, on_resume=lars_buffers_came_back)
