"""Training hooks soco_d2 adds to detectron2's: the EMA target update, per-iteration seeding and
the weight-drift diagnostic."""
import logging
from typing import Callable, Optional

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = [
    "TargetEMAHook",
    "IterationSeedHook",
    "WeightDriftHook",
    "unwrap_model",
    "iteration_seed",
]

logger = logging.getLogger(__name__)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, or ``model`` itself."""
    if isinstance(model, (DistributedDataParallel, DataParallel)):
        return model.module
    return model


class TargetEMAHook(HookBase):
    """After each optimizer step, move the target network towards the online one.

    Calls ``model.update_target(m)`` with ``m = momentum_fn(iter, max_iter)``, by default the
    model's own schedule ``model.target_momentum`` (``soco_d2.modeling.EMATargetMetaArch``:
    constant or cosine from MODEL.SSL.MOMENTUM). It depends only on the iteration, so a resumed
    run gets the same momenta. Register it before the periodic checkpointer so each checkpoint
    holds the target after that iteration's update.

    Args:
        momentum_fn: ``(iteration, max_iter) -> float``; default the model's
            ``target_momentum``.
    """

    def __init__(self, momentum_fn: Optional[Callable[[int, int], float]] = None):
        self._momentum_fn = momentum_fn

    def before_train(self) -> None:
        model = unwrap_model(self.trainer.model)
        if not hasattr(model, "update_target"):
            raise TypeError(
                f"{type(model).__name__} has no update_target(); "
                "TargetEMAHook only applies to models with an EMA target"
            )
        if self._momentum_fn is None:
            if not hasattr(model, "target_momentum"):
                raise TypeError(f"{type(model).__name__} has no target_momentum(); pass momentum_fn")
            self._momentum_fn = model.target_momentum

    def after_step(self) -> None:
        it, max_iter = self.trainer.iter, self.trainer.max_iter
        momentum = float(self._momentum_fn(it, max_iter))
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


def _sum_of_squares(tensors) -> torch.Tensor:
    """sum of x**2 over all tensors, in fp32, as one tensor (one device sync when read)."""
    return torch.stack([t.float().pow(2).sum() for t in tensors]).sum()


class WeightDriftHook(HookBase):
    """Log how far the weights moved from where this run started, as ``weight_drift``.

    ``weight_drift = ||w - w0|| / ||w0||`` over the trainable tensors of two or more dimensions
    (conv and linear weights; norm affines and biases left out), every ``period`` iterations and
    at the last one. ``w0`` is the state when this process began training: after ``--resume`` it
    is the resumed weights.

    With LARS each step changes a weight by about lr x trust coefficient of its norm, so a short
    schedule at a linearly scaled small-batch lr can leave the network where it started: a
    150-step demo run at lr 0.25 (2.0 x 32/256) moved its weights by about 1%, and its "pretrained"
    detector was a random init. A run that trained from iteration 0 to the end and drifted less
    than ``warn_below`` logs a warning.

    Args:
        period: iterations between two measurements.
        warn_below: the drift under which a completed run warns; 0 disables the warning.
    """

    def __init__(self, period: int = 20, warn_below: float = 0.05):
        self._period = max(1, int(period))
        self._warn_below = float(warn_below)
        self._initial = None
        self._initial_norm_sq = 0.0
        self._start_iter = 0

    def _tracked(self):
        model = unwrap_model(self.trainer.model)
        return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]

    def before_train(self) -> None:
        self._start_iter = self.trainer.iter
        self._initial = [p.detach().clone() for p in self._tracked()]
        if self._initial:
            self._initial_norm_sq = float(_sum_of_squares(self._initial))

    @torch.no_grad()
    def drift(self) -> float:
        """``||w - w0|| / ||w0||`` now (0.0 before training started)."""
        if not self._initial:
            return 0.0
        moved = _sum_of_squares([p - p0 for p, p0 in zip(self._tracked(), self._initial)])
        return (float(moved) / max(self._initial_norm_sq, 1e-30)) ** 0.5

    def after_step(self) -> None:
        it = self.trainer.iter
        last = it + 1 == self.trainer.max_iter
        if (it + 1) % self._period and not last:
            return
        value = self.drift()
        self.trainer.storage.put_scalar("weight_drift", value, smoothing_hint=False)
        if last and self._start_iter == 0 and value < self._warn_below and comm.is_main_process():
            logger.warning(
                f"The weights moved {100 * value:.2f}% from their initial values over "
                f"{self.trainer.max_iter} iterations: the pretraining barely changed the network. "
                "With LARS a step moves a weight by about lr x SOLVER.LARS_TRUST of its norm; "
                "raise SOLVER.BASE_LR or train longer."
            )
