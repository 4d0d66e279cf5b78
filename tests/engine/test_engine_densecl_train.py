"""The Trainer on the tiny DenseCL config: real loader end to end, learning on a fixed batch,
exact resume (both queues and their ring pointers included)."""
from functools import partial

import pytest
import torch

import soco_d2  # noqa: F401  (registers DenseCL)
from soco_d2.engine import Trainer
from soco_d2.modeling.contrastive import info_nce_loss
from soco_d2.modeling.densecl.dense import dense_correspondence, dense_info_nce
from _train import (
    CONFIGS,
    assert_finite_losses,
    assert_resume_is_exact,
    fixed_batch_trainer,
    load_final_checkpoint,
    probe_before_and_after_training,
    start,
    tiny_cfg,
    write_random_images,
)

TINY = str(CONFIGS / "pretrain/densecl_R18_tiny.yaml")
QUEUE_KEYS = {"queue.queue", "queue.queue_ptr", "queue2.queue", "queue2.queue_ptr"}
FixedBatchTrainer = fixed_batch_trainer()


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    """``(out_dir, *opts) -> cfg`` on six 96x80 random-texture images, no proposal cache
    (DenseCL reads none)."""
    return partial(tiny_cfg, TINY, write_random_images(tmp_path_factory.mktemp("densecl_imgs")))


def test_tiny_config_trains_with_real_loader(make_cfg, tmp_path):
    trainer = start(Trainer, make_cfg(tmp_path, "SOLVER.MAX_ITER", "2"))
    queue2_0 = trainer.model.queue2.queue.clone()
    trainer.train()
    assert_finite_losses(trainer, 2)
    assert trainer.storage.history("densecl/dense_infonce").values()
    # two steps of 4 pooled dense keys at the head of queue2, unit length, the rest untouched
    q2 = trainer.model.queue2
    assert int(q2.queue_ptr) == 8 and int(trainer.model.queue.queue_ptr) == 8
    assert not torch.equal(q2.queue[:, :8], queue2_0[:, :8])
    assert torch.equal(q2.queue[:, 8:], queue2_0[:, 8:])
    torch.testing.assert_close(q2.queue.norm(dim=0), torch.ones(64))
    ckpt = load_final_checkpoint(tmp_path)
    keys = ckpt["model"].keys()
    assert QUEUE_KEYS <= keys
    assert any(k.startswith("target.dense_head.") for k in keys)
    assert any(k.startswith("target.backbone.res5.") for k in keys)
    assert ckpt["iteration"] == 1


def _probe_losses(model, batch, negatives):
    """Global and dense InfoNCE of the batch against FIXED negatives (no queue growth).

    Args:
        negatives: ``(global, dense)`` key copies of ``queue`` and ``queue2``.
    """
    negatives, negatives2 = negatives
    qf, q, q_grid, _ = model._encode_dense(model._online_container(),
                                           model.preprocess_view(batch, 0))
    kf, k, k_grid, _ = model._encode_dense(model.target, model.preprocess_view(batch, 1))
    t = model.temperature
    dense = dense_info_nce(q_grid, k_grid, dense_correspondence(qf, kf), negatives2, t)
    return info_nce_loss(q, k, negatives, t).item(), dense.item()


def test_few_iterations_reduce_loss_on_fixed_batch(make_cfg, tmp_path):
    """Learning, measured against the initial random queues.

    The logged loss of a fixed batch rises instead: every step enqueues keys of the same four
    images, so the rings fill with near-copies of each query's own positive.
    """
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "100")
    (g0, d0), (g1, d1) = probe_before_and_after_training(
        FixedBatchTrainer,
        cfg,
        lambda model: (model.queue.clone_keys(), model.queue2.clone_keys()),
        _probe_losses,
    )
    # the objective (w = 0.5) falls by over 20%, each term by over 10% (measured: 30%, 21%, 35%)
    assert g1 + d1 < 0.8 * (g0 + d0), (g0, g1, d0, d1)
    assert g1 < 0.9 * g0 and d1 < 0.9 * d0, (g0, g1, d0, d1)


def test_resume_after_kill_matches_uninterrupted(make_cfg, tmp_path):
    def ring_pointers_came_back(resumed):
        # both ring pointers came back with the weights
        assert int(resumed.model.queue.queue_ptr) == 8 and int(resumed.model.queue2.queue_ptr) == 8

    _, resumed = assert_resume_is_exact(
        FixedBatchTrainer, make_cfg, tmp_path, on_resume=ring_pointers_came_back
    )
    b = resumed.model.state_dict()
    assert QUEUE_KEYS <= b.keys()
    assert int(b["queue2.queue_ptr"]) == 16
