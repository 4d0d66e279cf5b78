"""Data-parallel training on CUDA (NCCL) and on CPU (gloo).

detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which
``DistributedDataParallel`` rejects for a CPU model, and ``torch.nn.SyncBatchNorm`` refuses CPU
tensors ("SyncBatchNorm expected input tensor to be on GPU ..."). Both are needed for a
multi-process CPU run (``tools/train_net.py --num-gpus 2`` without a GPU, tests, debugging):

- :func:`create_ddp_model` passes ``device_ids`` only for a CUDA model;
- :func:`convert_sync_batchnorm_for_cpu` swaps every ``nn.SyncBatchNorm`` of a CPU model for a
  :class:`CPUSyncBatchNorm`, which all-reduces its batch statistics with ``torch.distributed``
  (any backend, gloo included). The new module shares the old one's parameters and buffers,
  so an optimizer built before the swap keeps updating the right tensors, and it keeps the
  state-dict keys (``weight``, ``bias``, ``running_mean``, ``running_var``,
  ``num_batches_tracked``), so checkpoints are the same as on GPU.
"""
import inspect
import logging

import torch
import torch.distributed as dist
from detectron2.utils import comm
from fvcore.nn.distributed import differentiable_all_reduce
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..modeling.precision import at_least_float32

__all__ = [
    "CPUSyncBatchNorm",
    "convert_sync_batchnorm_for_cpu",
    "create_ddp_model",
    "prepare_for_distributed",
]

logger = logging.getLogger(__name__)


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """A batch norm whose training statistics are all-reduced over the default process group.

    Same arithmetic as ``nn.SyncBatchNorm``: the mean and (biased) variance used to normalise
    are those of all ranks' samples together, each rank weighted by its element count
    ``N x H x W``; the running variance gets the unbiased estimate; gradients flow through the
    all-reduce (fvcore's ``differentiable_all_reduce``, as detectron2's ``NaiveSyncBatchNorm``),
    so every rank's input gets the gradient of the global statistics. Inputs are ``(N, C)``,
    ``(N, C, L)`` or ``(N, C, H, W)``. Outside training, or in one process, it is a plain batch
    norm.

    It is not an ``nn.SyncBatchNorm`` subclass on purpose: ``DistributedDataParallel`` refuses
    CPU models that contain one. It is a ``BatchNorm2d`` (accepting 2-D and 3-D inputs too), as
    detectron2's ``NaiveSyncBatchNorm``, so code that looks for batch norms by type (detectron2's
    PreciseBN hook, ``soco_d2.solver.NORM_MODULE_TYPES``) finds it. The statistics come from one
    all-reduce (an all-gather and a sum, identical on every rank) of ``[sum, sum of squares,
    count]`` in float32 (float64 for float64 inputs).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"CPUSyncBatchNorm expects (N, C, *) input, got {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise ``input`` of shape ``(N, C, *)`` with statistics over all ranks."""
        distributed = dist.is_available() and dist.is_initialized() and comm.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        x = at_least_float32(input)
        count = x.new_full((1,), input.numel() / max(channels, 1))
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = differentiable_all_reduce(stats)
        total = stats[-1]
        if float(total.detach()) < 2:
            raise ValueError(
                "CPUSyncBatchNorm needs more than one value per channel over all ranks in "
                f"training, got input {tuple(input.shape)}"
            )
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp(min=0)

        with torch.no_grad():
            momentum = self.momentum
            if self.track_running_stats and self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if momentum is None:  # cumulative moving average, as in nn.BatchNorm
                    momentum = 1.0 / float(self.num_batches_tracked)
            if self.track_running_stats and self.running_mean is not None:
                unbiased = var * (total / (total - 1))
                for running, batch in ((self.running_mean, mean), (self.running_var, unbiased)):
                    running.mul_(1 - momentum).add_(batch.to(running), alpha=momentum)

        shape = [1, channels] + [1] * (input.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        bias = -mean * scale
        if self.affine:
            scale = scale * self.weight
            bias = bias * self.weight + self.bias
        out = x * scale.reshape(shape) + bias.reshape(shape)
        return out.to(input.dtype)


def _swap(module: nn.SyncBatchNorm) -> CPUSyncBatchNorm:
    # Built on the meta device: its own tensors are replaced by the module's right away.
    if module.process_group is not None:
        raise ValueError(
            "convert_sync_batchnorm_for_cpu supports SyncBatchNorm over the default process "
            f"group only; {module} has its own process_group"
        )
    new = CPUSyncBatchNorm(
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        device="meta",
    )
    # Share, not copy: an optimizer (and an EMA target list) built earlier still points at them.
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    for name, buf in module.named_buffers(recurse=False):
        new.register_buffer(name, buf)
    new.train(module.training)
    return new


def convert_sync_batchnorm_for_cpu(model: nn.Module) -> nn.Module:
    """Replace every ``nn.SyncBatchNorm`` in ``model`` by a :class:`CPUSyncBatchNorm`.

    Args:
        model: any module (a pretraining model with its EMA target, a detector, an MLP head).

    Returns:
        ``model`` itself, changed in place (a bare ``nn.SyncBatchNorm`` is returned converted).
        Parameters and buffers are the same tensor objects as before.
    """
    if isinstance(model, nn.SyncBatchNorm):
        return _swap(model)
    converted = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.SyncBatchNorm):
                setattr(parent, name, _swap(child))
                converted += 1
    if converted:
        logger.info("Converted %d SyncBatchNorm layers to CPUSyncBatchNorm", converted)
    return model


def _is_cuda(model: nn.Module) -> bool:
    return any(t.is_cuda for t in list(model.parameters()) + list(model.buffers()))


def prepare_for_distributed(model: nn.Module) -> nn.Module:
    """Make ``model`` trainable in the current process group (any time before training).

    In a multi-process run on CPU, synchronised norms become :class:`CPUSyncBatchNorm` (they
    stay synchronised: never per-process statistics); otherwise ``model`` is unchanged. The
    parameters are the same objects afterwards, so an optimizer built earlier stays valid.

    Args:
        model: the built (unwrapped) model.

    Returns:
        ``model``.
    """
    if comm.get_world_size() > 1 and not _is_cuda(model):
        model = convert_sync_batchnorm_for_cpu(model)
    return model


def create_ddp_model(
    model: nn.Module,
    *,
    find_unused_parameters: bool = False,
    broadcast_buffers: bool = False,
    **kwargs,
) -> nn.Module:
    """``DistributedDataParallel(model)`` when there is more than one process, else ``model``.

    Like detectron2's ``create_ddp_model``, but ``device_ids`` is passed only for a CUDA model
    (the local rank's device), so CPU models train over gloo; a CPU model's ``SyncBatchNorm``
    layers are converted first (:func:`prepare_for_distributed`).

    Args:
        model: the model, already on its device.
        find_unused_parameters: DDP's search for parameters without a gradient
            (SOLVER.DDP_FIND_UNUSED_PARAMETERS).
        broadcast_buffers: re-broadcast rank 0's buffers every forward; off, since
            synchronised norms keep the buffers equal (they are broadcast once at wrapping).
        **kwargs: other ``DistributedDataParallel`` arguments.

    Returns:
        The DDP-wrapped model, or ``model`` in a single process.
    """
    if comm.get_world_size() == 1:
        return model
    model = prepare_for_distributed(model)
    if _is_cuda(model):
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    else:
        kwargs.pop("device_ids", None)
        kwargs.pop("output_device", None)
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        # Newer torch renamed the flag; the new one still syncs buffers once at construction,
        # which is what a run with per-rank seeds wants.
        kwargs["forward_sync_buffers"] = broadcast_buffers
    else:
        kwargs["broadcast_buffers"] = broadcast_buffers
    return DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **kwargs)
