"""Schedule: batch-scaled lr, epochs -> iterations, warmup from lr/100 and cosine to BASE_LR_END."""
import math
from pathlib import Path

import pytest
import torch
from detectron2.solver import build_lr_scheduler

from soco_d2.engine import load_cfg
from soco_d2.solver import iterations_per_epoch, resolve_schedule

BASE = str(Path(__file__).resolve().parents[2] / "configs/pretrain/Base-SoCo-R50-FPN.yaml")


def test_iterations_per_epoch_drops_last_partial_batch():
    assert iterations_per_epoch(1_281_167, 2048) == 625
    assert iterations_per_epoch(10, 4) == 2
    assert iterations_per_epoch(3, 4) == 1
    with pytest.raises(ValueError):
        iterations_per_epoch(0, 4)


def test_official_schedule_from_epochs():
    cfg = load_cfg(BASE, ["SOLVER.EPOCHS", "100"], num_train_images=1_281_167, register=False)
    assert cfg.SOLVER.BASE_LR == pytest.approx(8.0)  # 1.0 * 2048 / 256
    assert cfg.SOLVER.MAX_ITER == 100 * 625
    assert cfg.SOLVER.WARMUP_ITERS == 10 * 625
    assert cfg.SOLVER.CHECKPOINT_PERIOD == 625


def test_resolve_schedule_is_idempotent():
    cfg = load_cfg(BASE, ["SOLVER.IMS_PER_BATCH", "512"], num_train_images=5120, register=False)
    cfg = cfg.clone()
    cfg.defrost()
    lr, max_iter = cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER
    assert lr == pytest.approx(2.0) and max_iter == 100 * 10
    resolve_schedule(cfg, 5120)  # e.g. a dumped config.yaml loaded again
    assert cfg.SOLVER.BASE_LR == pytest.approx(lr)
    assert cfg.SOLVER.MAX_ITER == max_iter


def test_epochs_without_dataset_size_is_a_clear_error():
    cfg = load_cfg(BASE, ["SOLVER.EPOCHS", "0"], register=False).clone()
    cfg.defrost()
    cfg.SOLVER.EPOCHS = 2
    with pytest.raises(ValueError, match="training-set size"):
        resolve_schedule(cfg, 0)


def test_warmup_then_cosine_to_base_lr_end_per_iteration():
    # 10 epochs of 4 iterations, 2 of warmup, at batch 256 -> lr 1.0.
    cfg = load_cfg(
        BASE,
        ["SOLVER.IMS_PER_BATCH", "256", "SOLVER.EPOCHS", "10", "SOLVER.WARMUP_EPOCHS", "2"],
        num_train_images=1024,
        register=False,
    )
    max_iter, warmup, lr, end = 40, 8, 1.0, cfg.SOLVER.BASE_LR_END
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.BASE_LR) == (
        max_iter, warmup, lr)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(max_iter):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(lr / 100)
    for i in range(warmup):  # linear from lr/100 to lr
        assert lrs[i] == pytest.approx(lr / 100 + (lr - lr / 100) * i / warmup)
    for i in range(warmup, max_iter):  # cosine over the remaining iterations
        t = (i - warmup) / (max_iter - warmup)
        assert lrs[i] == pytest.approx(end + 0.5 * (lr - end) * (1 + math.cos(math.pi * t)))
    assert lrs[warmup] == pytest.approx(lr)
    assert lrs[-1] < 0.01 * lr
