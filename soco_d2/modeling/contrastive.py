"""InfoNCE against a queue of negatives.

The MoCo v2 formulation, shared by MoCo, DenseCL and DetCo: for each query q its positive key
k+ sits in column 0 of the logits, the queue's keys in columns 1..K; the loss is cross entropy
with label 0 over ``[q.k+, q.queue] / T``. Every process's keys reach the queue through
``comm.concat_all_gather``.
"""
from typing import Tuple

import torch

from .precision import at_least_float32

__all__ = ["info_nce_logits", "info_nce_loss"]


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
    _check_info_nce(q, k, queue_keys, temperature)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue_keys.to(q.dtype)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return logits, labels


def info_nce_loss(
    q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean cross entropy of :func:`info_nce_logits` with label 0 (MoCo's loss).

    The (B, 1 + K) logits are never materialised: :class:`_QueueInfoNCE` takes the log-sum-exp
    and the gradients over blocks of a few MiB in the forward pass. With DenseCL's B = 392 query
    cells per batch of 8 and K = 65536 the logits would be 103 MB, allocated, copied and freed
    several times a step (docs/benchmarks.md has the measurement).
    Nothing of ``queue_keys`` is kept for backward, so a ring buffer that is written after the
    call may be passed without a copy (``KeyQueue.keys_view()``).

    Args: as :func:`info_nce_logits`.

    Returns:
        scalar loss; computed in float32 so half-precision logits do not overflow at small T.
    """
    _check_info_nce(q, k, queue_keys, temperature)
    with torch.autocast(q.device.type, enabled=False):
        return _QueueInfoNCE.apply(
            at_least_float32(q),
            at_least_float32(k),
            at_least_float32(queue_keys),
            float(temperature),
        )


def _check_info_nce(q, k, queue_keys, temperature) -> None:
    if temperature <= 0:
        raise ValueError(f"InfoNCE temperature must be > 0, got {temperature}")
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"q and k must both be (B, D), got {tuple(q.shape)}, {tuple(k.shape)}")
    if queue_keys.dim() != 2 or queue_keys.shape[0] != q.shape[1]:
        raise ValueError(f"queue_keys must be (D={q.shape[1]}, K), got {tuple(queue_keys.shape)}")


# Negative logits held at once: a (B, block) slice of about 4 MiB of float32.
_BLOCK_ELEMENTS = 1 << 20


class _QueueInfoNCE(torch.autograd.Function):
    """``mean_i [logsumexp([q_i.k_i, q_i.queue] / T) - q_i.k_i / T]`` over blocks of the queue.

    The loss is a scalar, so its gradients are fixed once the forward pass has the softmax. The
    forward pass walks the queue in column blocks with a running row maximum and sum (the
    streaming softmax of FlashAttention), and adds each block's share of ``dq`` while the block
    is in cache; the backward pass only scales the stored gradients. Per row i, with p its
    softmax over ``[positive, queue]`` and 1/B from the mean::

        dq_i     = 1 / (B T) * ((p_pos - 1) k_i + queue @ p_neg)
        dk_i     = 1 / (B T) * (p_pos - 1) q_i
        dqueue   = 1 / (B T) * sum_i q_i p_neg^T     (a second pass; only if asked for)

    Two (B, D) x (D, K)-sized products, as with materialised logits; not twice differentiable.
    """

    @staticmethod
    def forward(ctx, q, k, queue, temperature):
        need_q, need_k, need_queue = (t.requires_grad for t in (q, k, queue))
        n, num_keys = q.shape[0], queue.shape[1]
        q_s = q / temperature
        l_pos = (q_s * k).sum(dim=1)
        cols = max(1, _BLOCK_ELEMENTS // max(1, n))
        run_max = torch.full_like(l_pos, float("-inf"))
        run_sum = torch.zeros_like(l_pos)
        acc = torch.zeros_like(q) if need_q else None  # sum_j exp(l_ij - run_max_i) queue_j
        for j in range(0, num_keys, cols):
            block = queue[:, j : j + cols]
            p = q_s @ block
            new_max = torch.maximum(run_max, p.amax(dim=1))
            rescale = torch.exp(run_max - new_max)
            p.sub_(new_max[:, None]).exp_()
            run_sum = run_sum * rescale + p.sum(dim=1)
            if need_q:
                acc.mul_(rescale[:, None]).addmm_(p, block.T)
            run_max = new_max
        top = torch.maximum(run_max, l_pos)
        neg_share = torch.exp(run_max - top)
        z = run_sum * neg_share + torch.exp(l_pos - top)
        lse = top + torch.log(z)
        scale = 1.0 / (n * temperature)
        pos_coef = (torch.exp(l_pos - lse) - 1.0)[:, None] * scale
        grads = [None, None, None]
        if need_q:
            grads[0] = acc * (neg_share / z * scale)[:, None] + pos_coef * k
        if need_k:
            grads[1] = pos_coef * q
        if need_queue:
            grads[2] = torch.empty_like(queue)
            for j in range(0, num_keys, cols):
                p = (q_s @ queue[:, j : j + cols]).sub_(lse[:, None]).exp_()
                torch.mm(q.T, p, out=grads[2][:, j : j + cols])
            grads[2].mul_(scale)
        ctx.save_for_backward(*[g for g in grads if g is not None])
        ctx.present = [g is not None for g in grads]
        return (lse - l_pos).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_out if present else None for present in ctx.present]
        return (*grads, None)
