"""Momentum (EMA) target networks and their cosine momentum schedule.

Shared by every BYOL/MoCo-style method of the plugin: build the target as a deep copy of the
online modules (same architecture, same norms), freeze it, and after each step move its
parameters towards the online ones.
"""
import copy
import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["cosine_momentum", "constant_momentum", "build_momentum_target", "ema_update_"]


def cosine_momentum(base: float, iteration: int, max_iter: int) -> float:
    """Momentum at ``iteration``: 1 - (1 - base) * (cos(pi * it / max_iter) + 1) / 2.

    Starts at ``base`` and rises to 1 at ``max_iter`` (BYOL / official SoCo schedule).

    Args:
        base: m0, e.g. 0.99.
        iteration: current iteration, 0-based; clamped to [0, max_iter].
        max_iter: total iterations K (> 0).

    Returns:
        the momentum m in [base, 1].
    """
    if max_iter <= 0:
        raise ValueError(f"max_iter must be > 0, got {max_iter}")
    it = min(max(iteration, 0), max_iter)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * it / max_iter) + 1.0) / 2.0


def constant_momentum(base: float, iteration: int, max_iter: int) -> float:
    """The same momentum at every iteration (MoCo, DenseCL, DetCo: 0.999).

    Args:
        base: m.
        iteration, max_iter: ignored; the signature matches :func:`cosine_momentum`.

    Returns:
        ``base``.
    """
    return float(base)


def build_momentum_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online``: same weights, buffers, norms; requires_grad False.

    Args:
        online: the module (or container of modules) to mirror.

    Returns:
        the target module. Its mode follows its parent's ``train()``/``eval()`` calls; in
        training its BatchNorms use batch statistics and keep their own running statistics,
        as the official SoCo target does.
    """
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """One EMA step on parameters: target = m * target + (1 - m) * online.

    Only parameters move; buffers (BN running statistics) are left to the target's own forward
    passes, as in the official SoCo/BYOL code, which iterates ``parameters()`` only.

    Args:
        target: module built by :func:`build_momentum_target` from ``online``.
        online: the online module.
        momentum: m in [0, 1].
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("target and online modules have different parameter lists")
    _foreach_ema(t_params, [p.detach() for p in o_params], momentum)


def _foreach_ema(t_params: Iterable[torch.Tensor], o_params, momentum: float) -> None:
    t_params = list(t_params)
    # One fused kernel per dtype/device group instead of a python op per tensor.
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, list(o_params), alpha=1.0 - momentum)
