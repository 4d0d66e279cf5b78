"""Step runners: detectron2's SimpleTrainer / AMPTrainer plus a non-finite-loss guard.

detectron2 already raises ``FloatingPointError`` for a NaN loss, but only on the main process
and only every ``gather_metric_period`` iterations, so other ranks would hang in the next
collective. Here every rank checks every iteration, after backward and before the optimizer
step (the weights stay those of the last good iteration), and the ranks agree by an all-reduce.
Since the error is raised inside the step, no ``after_step`` hook (EMA, periodic checkpointer)
runs for that iteration: the last checkpoint on disk is the last good one.
"""
import logging
from typing import Mapping, Optional

import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm

__all__ = ["NonFiniteLossError", "check_losses_finite", "build_step_runner"]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; raised before the optimizer step."""


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise :class:`NonFiniteLossError` if any rank's summed loss is not finite.

    Args:
        loss_dict: scalar loss tensors of this rank.
        iteration: the iteration being run (named in the message).
    """
    total = sum(v.detach().float() for v in loss_dict.values())
    ok = torch.isfinite(total).to(torch.int32).reshape(1)
    if comm.get_world_size() > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if not bool(ok.item()):
        values = {k: float(v.detach().float().cpu()) for k, v in loss_dict.items()}
        raise NonFiniteLossError(
            f"Non-finite loss at iteration {iteration} (rank {comm.get_rank()} losses: "
            f"{values}); training stopped before the optimizer step of that iteration."
        )


class _FiniteLossMixin:
    """Runs :func:`check_losses_finite` where SimpleTrainer/AMPTrainer write metrics, i.e.
    after backward and before ``optimizer.step``, on every rank and every iteration."""

    def _write_metrics(
        self,
        loss_dict: Mapping[str, torch.Tensor],
        data_time: float,
        prefix: str = "",
        iter: Optional[int] = None,  # noqa: A002 (detectron2's argument name)
    ) -> None:
        check_losses_finite(loss_dict, self.iter if iter is None else iter)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class GuardedSimpleTrainer(_FiniteLossMixin, SimpleTrainer):
    """detectron2's SimpleTrainer that stops cleanly on a non-finite loss."""


class GuardedAMPTrainer(_FiniteLossMixin, AMPTrainer):
    """detectron2's AMPTrainer (fp16 with a grad scaler, or bf16 without) that stops cleanly
    on a non-finite loss."""


def build_step_runner(
    cfg: CfgNode,
    model: torch.nn.Module,
    data_loader,
    optimizer: torch.optim.Optimizer,
) -> SimpleTrainer:
    """The inner trainer that runs one step: AMP on CUDA when SOLVER.AMP.ENABLED, else fp32.

    Args:
        cfg: reads SOLVER.AMP.{ENABLED, DTYPE} and MODEL.DEVICE.
        model: the (possibly DDP-wrapped) model.
        data_loader: iterable of batches.
        optimizer: the optimizer.

    Returns:
        A GuardedAMPTrainer or GuardedSimpleTrainer.
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return GuardedSimpleTrainer(model, data_loader, optimizer)
    dtype_name = cfg.SOLVER.AMP.DTYPE
    if dtype_name not in _AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.DTYPE must be one of {sorted(_AMP_DTYPES)}, got {dtype_name}")
    if not (torch.cuda.is_available() and str(cfg.MODEL.DEVICE).startswith("cuda")):
        # Official configs enable AMP; on CPU (tests, demo) train in fp32 rather than fail.
        logger.warning("SOLVER.AMP.ENABLED needs CUDA; training in float32 on %s", cfg.MODEL.DEVICE)
        return GuardedSimpleTrainer(model, data_loader, optimizer)
    dtype = _AMP_DTYPES[dtype_name]
    # bf16 has fp32's exponent range: no loss scaling needed.
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return GuardedAMPTrainer(model, data_loader, optimizer, grad_scaler=scaler, precision=dtype)
