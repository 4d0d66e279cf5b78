"""InfoNCE with a queue of negatives, and the cross-process gather its keys need.

The MoCo v2 formulation, shared by MoCo, DenseCL and DetCo: for each query q its positive key
k+ sits in column 0 of the logits, the queue's keys in columns 1..K; the loss is cross entropy
with label 0 over ``[q.k+, q.queue] / T``.
"""
from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["concat_all_gather", "info_nce_logits", "info_nce_loss", "world_size"]


def world_size() -> int:
    """Number of processes of the default group; 1 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


@torch.no_grad()
def concat_all_gather(t: torch.Tensor) -> torch.Tensor:
    """Every process's ``t`` concatenated along dim 0, in rank order; no gradient.

    Args:
        t: (B, ...) tensor, the same shape on every process.

    Returns:
        (world_size * B, ...) tensor; ``t`` itself in a single process.
    """
    n = world_size()
    if n == 1:
        return t
    t = t.contiguous()
    out = [torch.empty_like(t) for _ in range(n)]
    dist.all_gather(out, t)
    return torch.cat(out, dim=0)


def info_nce_logits(
    q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor, temperature: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[q.k+, q.queue] / T`` and their labels (the positive is column 0).

    Args:
        q: (B, D) queries, L2-normalised.
        k: (B, D) positive keys, L2-normalised; row i is the positive of query i.
        queue_keys: (D, K) negatives, L2-normalised columns (e.g. ``KeyQueue.clone_keys()``).
        temperature: T > 0.

    Returns:
        logits: (B, 1 + K) float.
        labels: (B,) long zeros.
    """
    if temperature <= 0:
        raise ValueError(f"InfoNCE temperature must be > 0, got {temperature}")
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"q and k must both be (B, D), got {tuple(q.shape)}, {tuple(k.shape)}")
    if queue_keys.dim() != 2 or queue_keys.shape[0] != q.shape[1]:
        raise ValueError(f"queue_keys must be (D={q.shape[1]}, K), got {tuple(queue_keys.shape)}")
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue_keys.to(q.dtype)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return logits, labels


def info_nce_loss(
    q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean cross entropy of :func:`info_nce_logits` with label 0 (MoCo's loss).

    Args: as :func:`info_nce_logits`.

    Returns:
        scalar loss; computed in float32 so half-precision logits do not overflow at small T.
    """
    logits, labels = info_nce_logits(q, k, queue_keys, temperature)
    return F.cross_entropy(logits.float(), labels)
