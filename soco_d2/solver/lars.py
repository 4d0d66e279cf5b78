"""LARS: SGD with momentum whose update is rescaled per parameter tensor by a trust ratio.

For a parameter ``w`` with gradient ``g`` (weight decay ``wd`` folded in first):

    u = g + wd * w
    u = u * trust * ||w|| / ||u||     (only where both norms are > 0)
    buf = momentum * buf + u
    w = w - lr * buf

Parameter groups flagged ``lars_exclude=True`` (biases and normalization parameters in SoCo,
BYOL and PixPro) skip the trust ratio; :func:`soco_d2.solver.build.build_optimizer` also gives
them ``weight_decay=0``.
"""
from typing import Callable, Iterable, List, Optional

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling on top of SGD with (heavy-ball) momentum.

    Args:
        params: parameters or parameter groups. A group may set ``lars_exclude=True`` to skip
            the trust-ratio scaling (its weight decay is whatever the group says).
        lr: learning rate.
        momentum: momentum factor.
        weight_decay: L2 penalty folded into the gradient before the trust ratio.
        trust_coefficient: the LARS ``eta`` (0.001 in SoCo).
        eps: added to the update norm to keep the ratio finite.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 0.0,
    ):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        """Perform one optimization step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: List[torch.Tensor] = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # The foreach kernels batch ~150 small ops per group into a handful of calls; the
            # per-tensor loop dominated the optimizer time on CPU for ResNet-50.
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LARS does not support sparse gradients")
            wd = group["weight_decay"]
            if wd != 0:
                updates = torch._foreach_add(grads, params, alpha=wd)
            else:
                updates = [g.clone() for g in grads]
            if not group["lars_exclude"]:
                self._apply_trust_ratio(params, updates, group["trust_coefficient"], group["eps"])
            self._momentum_step(params, updates, group["momentum"], group["lr"])
        return loss

    @staticmethod
    def _apply_trust_ratio(
        params: List[torch.Tensor], updates: List[torch.Tensor], trust: float, eps: float
    ) -> None:
        w_norms = torch.stack(torch._foreach_norm(params)).float()
        u_norms = torch.stack(torch._foreach_norm(updates)).float()
        ratio = trust * w_norms / (u_norms + eps)
        # Zero-norm weights (fresh zero-init layers) or zero updates keep the plain SGD update.
        ratio = torch.where((w_norms > 0) & (u_norms > 0), ratio, torch.ones_like(ratio))
        torch._foreach_mul_(updates, list(ratio.unbind(0)))

    def _momentum_step(
        self, params: List[torch.Tensor], updates: List[torch.Tensor], momentum: float, lr: float
    ) -> None:
        if momentum == 0:
            torch._foreach_add_(params, updates, alpha=-lr)
            return
        bufs, old_bufs, old_updates = [], [], []
        for p, u in zip(params, updates):
            state = self.state[p]
            if "momentum_buffer" not in state:
                # First step: the buffer starts at the update itself, as torch.optim.SGD does.
                state["momentum_buffer"] = u
            else:
                old_bufs.append(state["momentum_buffer"])
                old_updates.append(u)
            bufs.append(state["momentum_buffer"])
        if old_bufs:
            torch._foreach_mul_(old_bufs, momentum)
            torch._foreach_add_(old_bufs, old_updates)
        torch._foreach_add_(params, bufs, alpha=-lr)
