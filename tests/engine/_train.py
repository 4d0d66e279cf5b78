"""Building blocks shared by the per-method training tests (SoCo, MoCo v2, DenseCL, DetCo, BYOL,
SIM).

Each of those tests trains a tiny config (``_configs.tiny_pretrain_cfg``) for a few CPU
iterations on a folder of random images (``_data.write_random_images``): once through the real
loader, once on one fixed batch to see it learn, and once killed and resumed to see the resume
is exact. The method-specific checks stay in the test files.
"""
import os
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode

from soco_d2.engine import Trainer
from _hooks import KillAfter


class _FixedBatchTrainer(Trainer):
    """Feeds one batch, drawn once from the real loader, at every iteration."""

    batch = None

    @classmethod
    def build_train_loader(cls, cfg):
        if cls.batch is None:
            cls.batch = next(iter(super().build_train_loader(cfg)))
        batch = cls.batch

        def forever():
            while True:
                yield batch

        return forever()


def fixed_batch_trainer() -> type:
    """A new Trainer subclass that trains on one fixed batch (kept in its ``batch`` attribute).

    Each test module makes its own: the batch is cached on the class, and the methods' batches
    differ in format (views, boxes, jigsaw patches).
    """
    return type("FixedBatchTrainer", (_FixedBatchTrainer,), {"batch": None})


def start(trainer_cls: type, cfg: CfgNode) -> Trainer:
    """A trainer of ``trainer_cls`` built from ``cfg`` and initialized without resuming."""
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def logged_losses(trainer: Trainer) -> list:
    """The ``total_loss`` the trainer logged at each iteration, oldest first."""
    return [v for v, _ in trainer.storage.history("total_loss").values()]


def assert_finite_losses(trainer: Trainer, count: int) -> list:
    """Asserts the trainer logged ``count`` finite total losses, and returns them."""
    losses = logged_losses(trainer)
    assert len(losses) == count and all(np.isfinite(losses)), losses
    return losses


def load_final_checkpoint(out_dir) -> dict:
    """The ``model_final.pth`` a finished run wrote to ``out_dir``, on CPU."""
    return torch.load(Path(out_dir) / "model_final.pth", map_location="cpu", weights_only=False)


def train_fixed_batch(trainer_cls: type, cfg: CfgNode) -> list:
    """Trains SOLVER.MAX_ITER steps on the fixed batch; asserts and returns the finite losses."""
    trainer = start(trainer_cls, cfg)
    trainer.train()
    return assert_finite_losses(trainer, cfg.SOLVER.MAX_ITER)


def probe_before_and_after_training(
    trainer_cls: type,
    cfg: CfgNode,
    initial_negatives: Callable[[torch.nn.Module], object],
    probe_loss: Callable[[torch.nn.Module, list, object], object],
) -> Tuple[object, object]:
    """Measures learning of a queue method against its INITIAL queue contents.

    The logged loss of a fixed batch is no measure for these methods: every step enqueues keys
    of the same images, so the queues fill with near-copies of each query's own positive and
    the logged loss rises. The probe instead scores the batch against the negatives the
    queues held before the first step.

    Args:
        trainer_cls: a class from :func:`fixed_batch_trainer`.
        cfg: the run; SOLVER.MAX_ITER steps are trained, each must log a finite loss.
        initial_negatives: ``model -> negatives``, a copy of the queue contents before training.
        probe_loss: ``(model, batch, negatives) -> loss(es)`` of the fixed batch, run under
            ``torch.no_grad``.

    Returns:
        ``(before, after)``: what ``probe_loss`` returned before and after training.
    """
    trainer = start(trainer_cls, cfg)
    model = trainer.model
    negatives = initial_negatives(model)
    with torch.no_grad():
        before = probe_loss(model, trainer_cls.batch, negatives)
    trainer.train()
    assert_finite_losses(trainer, cfg.SOLVER.MAX_ITER)
    with torch.no_grad():
        after = probe_loss(model, trainer_cls.batch, negatives)
    return before, after


def assert_resume_is_exact(
    trainer_cls: type,
    make_cfg: Callable[..., CfgNode],
    tmp_path: Path,
    on_resume: Optional[Callable[[Trainer], None]] = None,
) -> Tuple[Trainer, Trainer]:
    """Asserts 2 iterations + kill + resume + 2 iterations == 4 uninterrupted iterations.

    "Equal" means every tensor of the model's state dict is bit-equal and the resumed run logs
    the same losses as iterations 2 and 3 of the uninterrupted one.

    Args:
        trainer_cls: a class from :func:`fixed_batch_trainer` (the real loader would draw other
            batches after the resume than the uninterrupted run did).
        make_cfg: ``(out_dir, *opts) -> cfg`` checkpointing every 2 iterations, so the kill after
            iteration 1 leaves ``model_0000001.pth`` behind (``tiny_pretrain_cfg`` does).
        tmp_path: the runs write to ``tmp_path / "full"`` and ``tmp_path / "split"``.
        on_resume: called with the resumed trainer before it trains, for checks of what came
            back from the checkpoint besides the weights.

    Returns:
        ``(full, resumed)``: the uninterrupted and the resumed trainer, both trained.
    """
    full = start(trainer_cls, make_cfg(tmp_path / "full", "SOLVER.MAX_ITER", "4"))
    full.train()

    cfg = make_cfg(tmp_path / "split", "SOLVER.MAX_ITER", "4")
    killed = trainer_cls(cfg)
    killed.register_hooks([KillAfter(1)])
    killed.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert os.path.isfile(tmp_path / "split" / "model_0000001.pth")
    resumed = trainer_cls(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    if on_resume is not None:
        on_resume(resumed)
    resumed.train()

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    assert logged_losses(resumed) == logged_losses(full)[2:]
    return full, resumed
