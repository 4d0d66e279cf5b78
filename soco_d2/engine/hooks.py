"""Training hooks soco_d2 adds to detectron2's: the EMA target update and per-iteration seeding."""
from typing import Callable, Optional

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = ["TargetEMAHook", "IterationSeedHook", "unwrap_model", "iteration_seed"]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, or ``model`` itself."""
    if isinstance(model, (DistributedDataParallel, DataParallel)):
        return model.module
    return model


def _default_momentum_fn() -> Callable[[float, int, int], float]:
    # Imported lazily: the modeling package may register heavy modules we do not need here.
    from soco_d2.modeling.momentum import cosine_momentum

    return cosine_momentum


class TargetEMAHook(HookBase):
    """After each optimizer step, move the target network towards the online one.

    Calls ``model.update_target(m)`` with ``m = momentum_fn(base_momentum, iter, max_iter)``
    (cosine from ``base_momentum`` to 1 by default). It depends only on the iteration, so a
    resumed run gets the same momenta. Register it before the periodic checkpointer so each
    checkpoint holds the target after that iteration's update.

    Args:
        base_momentum: m0 (MODEL.SOCO.MOMENTUM, e.g. 0.99).
        momentum_fn: ``(base, iteration, max_iter) -> float``; default
            ``soco_d2.modeling.momentum.cosine_momentum``.
    """

    def __init__(
        self,
        base_momentum: float,
        momentum_fn: Optional[Callable[[float, int, int], float]] = None,
    ):
        self._base = float(base_momentum)
        self._momentum_fn = momentum_fn

    def before_train(self) -> None:
        if self._momentum_fn is None:
            self._momentum_fn = _default_momentum_fn()
        if not hasattr(unwrap_model(self.trainer.model), "update_target"):
            raise TypeError(
                f"{type(unwrap_model(self.trainer.model)).__name__} has no update_target(); "
                "TargetEMAHook only applies to models with an EMA target"
            )

    def after_step(self) -> None:
        it, max_iter = self.trainer.iter, self.trainer.max_iter
        momentum = float(self._momentum_fn(self._base, it, max_iter))
        unwrap_model(self.trainer.model).update_target(momentum)
        self.trainer.storage.put_scalar("ema_momentum", momentum, smoothing_hint=False)


def iteration_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """A 31-bit seed mixed from (seed, iteration, rank), distinct for each triple.

    Args:
        seed: the run's base seed (cfg.SEED >= 0).
        iteration: training iteration.
        rank: process rank.

    Returns:
        An int in [0, 2**31).
    """
    state = np.random.SeedSequence([int(seed), int(iteration), int(rank)]).generate_state(1)
    return int(state[0] % (2**31))


class IterationSeedHook(HookBase):
    """Re-seed python, numpy and torch RNGs before every step from (seed, iteration, rank).

    Random numbers drawn in the main process during a step (the mapper with
    DATALOADER.NUM_WORKERS 0, dropout, random choices in a model) then depend only on the
    iteration, so a run resumed from a checkpoint draws the same numbers as an uninterrupted
    one. At scale the data loader workers own their RNG streams and detectron2's seeded
    infinite sampler restarts its permutation on resume: weights, optimizer, schedule and EMA
    continue exactly, the data order is a fresh (equally distributed) draw.

    Args:
        seed: base seed (cfg.SEED); a negative seed disables the hook.
    """

    def __init__(self, seed: int):
        self._seed = int(seed)

    def before_step(self) -> None:
        if self._seed < 0:
            return
        seed_all_rng(iteration_seed(self._seed, self.trainer.iter, comm.get_rank()))
