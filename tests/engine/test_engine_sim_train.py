"""SIM through the Trainer on CPU: real loader, loss decrease on a fixed batch, exact resume."""
import os
from functools import partial

import numpy as np
import pytest

from soco_d2.engine import Trainer
from _configs import tiny_pretrain_cfg
from _data import write_random_images
from _paths import CONFIGS
from _train import (
    assert_finite_losses,
    assert_resume_is_exact,
    fixed_batch_trainer,
    start,
    train_fixed_batch,
)

TINY = os.path.join(CONFIGS, "pretrain/sim_vit_tiny.yaml")
FixedBatchTrainer = fixed_batch_trainer()


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    """``(out_dir, *opts) -> cfg`` on six 56x48 random-texture images."""
    root = write_random_images(tmp_path_factory.mktemp("sim_train_imgs"), height=48, width=56)
    return partial(tiny_pretrain_cfg, TINY, root)


def test_real_loader_and_loss_decrease(make_cfg, tmp_path):
    trainer = start(Trainer, make_cfg(tmp_path / "real", "SOLVER.MAX_ITER", "2"))
    trainer.train()
    assert_finite_losses(trainer, 2)
    assert np.isfinite(trainer.storage.history("sim/pos").latest())

    cfg = make_cfg(tmp_path / "fixed", "SOLVER.MAX_ITER", "8",
                   "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.BASE_LR", "0.003")
    losses = train_fixed_batch(FixedBatchTrainer, cfg)
    assert losses[-1] < 0.9 * losses[0], losses


def test_resume_is_exact(make_cfg, tmp_path):
    assert_resume_is_exact(FixedBatchTrainer, make_cfg, tmp_path)
