"""Shuffling BN for momentum encoders, across processes or imitated in one.

MoCo's key encoder sees its batch shuffled across processes, so that the per-process BN
statistics of a key never come from the same images as its query's (otherwise the batch
statistics leak which keys are positives and InfoNCE is solved by a shortcut).

- :func:`batch_shuffle` / :func:`batch_unshuffle`: with several processes, every process's key
  images are gathered, one permutation drawn on rank 0 is broadcast, each process takes its slice
  and later takes its own keys back; in one process, a plain permutation of the batch.
- :class:`SplitBatchNorm`: in one process, BatchNorm statistics per split of the batch, as if the
  batch ran on ``num_splits`` devices (the official MoCo single-GPU recipe); with the shuffle
  above, a key's BN group differs from its query's, as with ``num_splits`` processes.
"""
from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .comm import concat_all_gather, get_world_size

__all__ = ["batch_shuffle", "batch_unshuffle", "SplitBatchNorm", "convert_to_split_batchnorm"]


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shuffle a batch among all processes (or within this one).

    Args:
        x: (B, ...) this process's batch; B equal on every process.

    Returns:
        x_shuffled: (B, ...) this process's slice of the shuffled global batch.
        idx_unshuffle: (world_size * B,) long, the inverse permutation for
            :func:`batch_unshuffle` (identical on every process).
    """
    n = get_world_size()
    if n == 1:
        idx_shuffle = torch.randperm(x.shape[0], device=x.device)
        return x[idx_shuffle], torch.argsort(idx_shuffle)
    x_all = concat_all_gather(x)
    # One permutation for all: drawn on rank 0, so every process agrees on who keys which image.
    idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(idx_shuffle, src=0)
    idx_this = idx_shuffle.view(n, -1)[dist.get_rank()]
    return x_all[idx_this], torch.argsort(idx_shuffle)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """Undo :func:`batch_shuffle` on its outputs (e.g. the keys of the shuffled images).

    Args:
        x: (B, ...) outputs for this process's shuffled slice.
        idx_unshuffle: the second output of :func:`batch_shuffle`.

    Returns:
        (B, ...) outputs in the original order of this process's batch.
    """
    n = get_world_size()
    if n == 1:
        return x[idx_unshuffle]
    x_all = concat_all_gather(x)
    return x_all[idx_unshuffle.view(n, -1)[dist.get_rank()]]


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per split of the batch.

    In training, image ``i`` of an (N, C, H, W) batch is normalised with the statistics of split
    ``i % num_splits`` (the images ``j, j + s, j + 2s, ...``: the grouping of the official MoCo
    single-GPU notebook); each split updates a copy of the running statistics and the copies are
    averaged, as the notebook does. In eval (with running statistics) it is plain BatchNorm.
    Parameters and buffers are those of ``nn.BatchNorm2d``, so state dicts are interchangeable.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        """
        Args:
            num_features: channels C.
            num_splits: imitated number of devices (>= 1; 1 is plain BatchNorm).
            kwargs: ``nn.BatchNorm2d`` arguments (eps, momentum, affine, ...).
        """
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"SplitBatchNorm needs num_splits >= 1, got {num_splits}")
        self.num_splits = int(num_splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W); N must be a multiple of ``num_splits`` in training."""
        s = self.num_splits
        if not self.training and self.track_running_stats:
            return super().forward(x)
        if s == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % s != 0:
            raise ValueError(
                f"SplitBatchNorm imitates {s} devices but got a batch of {n} images: the "
                f"per-process batch (SOLVER.IMS_PER_BATCH / number of processes) must be a "
                f"multiple of the split count (the method's SPLIT_BN key, e.g. MODEL.MOCO.SPLIT_BN)"
            )
        self._check_input_dim(x)
        factor = 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            # As nn.BatchNorm2d: momentum None means a cumulative average.
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
        # (N, C, H, W) -> (N / s, s * C, H, W): channel block j holds images j, j + s, ...
        # so one batch_norm call computes s independent statistics (a channels_last input is
        # copied to contiguous for this view; the output is contiguous).
        grouped = x.contiguous().view(n // s, s * c, h, w)
        running_mean = self.running_mean.repeat(s) if self.track_running_stats else None
        running_var = self.running_var.repeat(s) if self.track_running_stats else None
        weight = self.weight.repeat(s) if self.affine else None
        bias = self.bias.repeat(s) if self.affine else None
        out = F.batch_norm(grouped, running_mean, running_var, weight, bias, True, factor, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(running_mean.view(s, c).mean(dim=0))
                self.running_var.copy_(running_var.view(s, c).mean(dim=0))
        return out.view(n, c, h, w)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_splits={self.num_splits}"


def convert_to_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a :class:`SplitBatchNorm`.

    Weights, running statistics, mode and device carry over; state-dict keys do not change, so
    a converted model's checkpoint loads into the plain one (and into a detector).

    Args:
        module: e.g. a detectron2 ResNet built with norm "BN".
        num_splits: imitated devices per process.

    Returns:
        ``module`` itself, modified in place (or the replacement if ``module`` is a BN itself).
    """
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SplitBatchNorm):
        new = SplitBatchNorm(
            module.num_features,
            num_splits,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        ref = module.running_mean if module.running_mean is not None else module.weight
        if ref is not None:
            new.to(device=ref.device, dtype=ref.dtype)
        new.load_state_dict(module.state_dict())
        if module.affine:  # a frozen norm stays frozen
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_to_split_batchnorm(child, num_splits)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
