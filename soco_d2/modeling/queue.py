"""A ring buffer of past keys, the negatives of MoCo-style InfoNCE losses.

MoCo, DenseCL and DetCo keep the last ``size`` key embeddings of the momentum encoder. The ring
and its write pointer are buffers, so they travel in checkpoints and a resumed run continues the
ring exactly where it stopped.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KeyQueue"]


class KeyQueue(nn.Module):
    """``size`` L2-normalised ``dim``-d keys, written in order at a wrapping pointer.

    Buffers:
        queue: (dim, size) float keys, one per column (the official MoCo layout, so the
            negatives' logits are ``q @ queue``); starts as random unit vectors.
        queue_ptr: (1,) long, the column the next key batch is written at.
    """

    def __init__(self, dim: int, size: int):
        """
        Args:
            dim: key width D (MoCo: 128).
            size: number of keys K (MoCo: 65536); every enqueued batch must divide it.
        """
        super().__init__()
        if dim <= 0 or size <= 0:
            raise ValueError(f"KeyQueue needs dim > 0 and size > 0, got dim={dim}, size={size}")
        self.dim = int(dim)
        self.size = int(size)
        self.register_buffer("queue", F.normalize(torch.randn(self.dim, self.size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def check_batch(self, total_batch: int, size_key: str = "the queue size") -> None:
        """Fail early when a step's keys (all processes together) cannot tile the ring.

        Args:
            total_batch: keys enqueued per step over all processes (SOLVER.IMS_PER_BATCH).
            size_key: the config key that set ``size``, named in the error.
        """
        if total_batch <= 0 or self.size % total_batch != 0:
            raise ValueError(
                f"{size_key} ({self.size}) must be a multiple of SOLVER.IMS_PER_BATCH "
                f"({total_batch}): each step writes IMS_PER_BATCH keys into the ring, so the ring "
                f"must hold a whole number of steps. Change SOLVER.IMS_PER_BATCH or {size_key}."
            )

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` at the pointer, overwriting the oldest; advance the pointer.

        Args:
            keys: (B, dim), already gathered from every process and L2-normalised.
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(
                f"KeyQueue.enqueue expects (B, {self.dim}) keys, got {tuple(keys.shape)}"
            )
        b = keys.shape[0]
        if b == 0 or self.size % b != 0:
            raise ValueError(
                f"KeyQueue of size {self.size} cannot take batches of {b} keys: the size must be "
                f"a multiple of the number of keys per step (SOLVER.IMS_PER_BATCH)"
            )
        ptr = int(self.queue_ptr[0])
        # The official layout: keys as columns; b divides size, so a batch never straddles the end.
        self.queue[:, ptr : ptr + b] = keys.detach().t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + b) % self.size

    def clone_keys(self) -> torch.Tensor:
        """(dim, size) detached copy of the ring.

        A copy, because the step's own enqueue writes the ring in place after the logits are
        built; autograd would otherwise see a saved input modified.
        """
        return self.queue.clone().detach()

    def keys_view(self) -> torch.Tensor:
        """(dim, size) the ring itself, detached, no copy: for a loss that reads the keys only
        while it runs and keeps nothing of them for backward (``contrastive.info_nce_loss``)."""
        return self.queue.detach()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}"
