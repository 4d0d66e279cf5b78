"""The Trainer on the tiny SoCo config: real loader end to end, loss decrease, exact resume."""
import os
from functools import partial

import pytest
import torch

import soco_d2  # noqa: F401  (registers SoCo)
from soco_d2.engine import Trainer
from _configs import tiny_pretrain_cfg
from _data import write_proposal_folder
from _paths import CONFIGS
from _train import (
    assert_finite_losses,
    assert_resume_is_exact,
    fixed_batch_trainer,
    load_final_checkpoint,
    start,
    train_fixed_batch,
)

TINY = os.path.join(CONFIGS, "pretrain/soco_R18_FPN_tiny.yaml")
FixedBatchTrainer = fixed_batch_trainer()


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    """``(out_dir, *opts) -> cfg`` on six 96x80 random-texture images and a proposal cache
    with 5 boxes each."""
    root, cache = write_proposal_folder(tmp_path_factory.mktemp("soco_imgs"), 6)
    return partial(tiny_pretrain_cfg, TINY, root, proposals=cache)


def test_tiny_config_trains_with_real_loader(make_cfg, tmp_path):
    trainer = start(Trainer, make_cfg(tmp_path, "SOLVER.MAX_ITER", "2"))
    trainer.train()
    assert_finite_losses(trainer, 2)
    # SyncBN runs as plain BN in one process; the checkpoint holds online and target weights.
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.model.modules())
    ckpt = load_final_checkpoint(tmp_path)
    keys = ckpt["model"].keys()
    assert any(k.startswith("target.backbone.") for k in keys)
    assert any(k.startswith("roi_heads.box_head.") for k in keys)
    assert ckpt["iteration"] == 1
    trainer_state = ckpt["trainer"]
    assert trainer_state["_trainer"]["optimizer"]["state"]  # LARS momentum buffers
    assert any("LRScheduler" in k for k in trainer_state["hooks"])


def test_few_iterations_reduce_loss_on_fixed_batch(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "100")
    losses = train_fixed_batch(FixedBatchTrainer, cfg)
    assert losses[-1] < 0.8 * losses[0], losses


def test_resume_after_kill_matches_uninterrupted(make_cfg, tmp_path):
    assert_resume_is_exact(FixedBatchTrainer, make_cfg, tmp_path)
