"""Cross-process communication of the modeling code: the all-gather a queue of keys and the
shuffle of BN need. Without ``torch.distributed`` (or with one process) every call is the
identity, so the same model code runs under any launcher and in tests.
"""
import torch
import torch.distributed as dist
from detectron2.utils.comm import get_world_size

__all__ = ["concat_all_gather", "get_world_size"]


@torch.no_grad()
def concat_all_gather(t: torch.Tensor) -> torch.Tensor:
    """Every process's ``t`` concatenated along dim 0, in rank order; no gradient.

    Args:
        t: (B, ...) tensor, the same shape on every process.

    Returns:
        (world_size * B, ...) tensor; ``t`` itself in a single process.
    """
    n = get_world_size()
    if n == 1:
        return t
    t = t.contiguous()
    out = [torch.empty_like(t) for _ in range(n)]
    dist.all_gather(out, t)
    return torch.cat(out, dim=0)
