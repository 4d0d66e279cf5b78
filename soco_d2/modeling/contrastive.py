"""InfoNCE against a queue of negatives.

The MoCo v2 formulation, shared by MoCo, DenseCL and DetCo: for each query q its positive key
k+ sits in column 0 of the logits, the queue's keys in columns 1..K; the loss is cross entropy
with label 0 over ``[q.k+, q.queue] / T``. Every process's keys reach the queue through
``comm.concat_all_gather``.

Given ``exclude = (query_ids, queue_ids)``, (B,) and (K,) image ids, a queue key whose id equals
its query's is left out of that query's negatives (its logit is -inf): a key of the query's own
image from an earlier step (``KeyQueue.exclusion``, ``MODEL.MOCO.EXCLUDE_SAME_IMAGE``).
"""
from typing import Optional, Tuple

import torch

from .precision import at_least_float32

__all__ = ["info_nce_logits", "info_nce_loss"]


def info_nce_logits(
    q: torch.Tensor,
    k: torch.Tensor,
    queue_keys: torch.Tensor,
    temperature: float,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[q.k+, q.queue] / T`` and their labels (the positive is column 0).

    Args:
        q: (B, D) queries, L2-normalised.
        k: (B, D) positive keys, L2-normalised; row i is the positive of query i.
        queue_keys: (D, K) negatives, L2-normalised columns (e.g. ``KeyQueue.clone_keys()``).
        temperature: T > 0.
        exclude: ``(query_ids, queue_ids)``, (B,) and (K,) long image ids, or None: a queue
            key of the query's own image gets logit -inf (left out of its negatives).

    Returns:
        logits: (B, 1 + K) float.
        labels: (B,) long zeros.
    """
    _check_info_nce(q, k, queue_keys, temperature, exclude)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue_keys.to(q.dtype)
    if exclude is not None:
        l_neg = l_neg.masked_fill(_same_image(*exclude), float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return logits, labels


def info_nce_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue_keys: torch.Tensor,
    temperature: float,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
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
    _check_info_nce(q, k, queue_keys, temperature, exclude)
    with torch.autocast(q.device.type, enabled=False):
        return _QueueInfoNCE.apply(
            at_least_float32(q),
            at_least_float32(k),
            at_least_float32(queue_keys),
            float(temperature),
            *(exclude or (None, None)),
        )


def _check_info_nce(q, k, queue_keys, temperature, exclude=None) -> None:
    if temperature <= 0:
        raise ValueError(f"InfoNCE temperature must be > 0, got {temperature}")
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"q and k must both be (B, D), got {tuple(q.shape)}, {tuple(k.shape)}")
    if queue_keys.dim() != 2 or queue_keys.shape[0] != q.shape[1]:
        raise ValueError(f"queue_keys must be (D={q.shape[1]}, K), got {tuple(queue_keys.shape)}")
    if exclude is None:
        return
    query_ids, queue_ids = exclude
    if tuple(query_ids.shape) != (q.shape[0],) or tuple(queue_ids.shape) != (queue_keys.shape[1],):
        raise ValueError(
            f"query_ids must be ({q.shape[0]},) and queue_ids ({queue_keys.shape[1]},), got "
            f"{tuple(query_ids.shape)} and {tuple(queue_ids.shape)}"
        )


def _same_image(query_ids: torch.Tensor, queue_ids: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: queue key j comes from query i's image."""
    return query_ids.to(queue_ids.device)[:, None] == queue_ids[None, :]


# A floor for the running maximum, so that a row whose keys so far are all left out (-inf)
# rescales by exp(-inf) = 0 instead of exp(-inf - -inf) = nan. Logits are within +-1/T.
_MAX_FLOOR = -1e30


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
    Keys left out by the ids get p = 0 (logit -inf): no share of the sum nor of any gradient.
    """

    @staticmethod
    def forward(ctx, q, k, queue, temperature, query_ids=None, queue_ids=None):
        need_q, need_k, need_queue = (t.requires_grad for t in (q, k, queue))
        n, num_keys = q.shape[0], queue.shape[1]
        q_s = q / temperature
        l_pos = (q_s * k).sum(dim=1)
        cols = max(1, _BLOCK_ELEMENTS // max(1, n))
        run_max = torch.full_like(l_pos, float("-inf"))
        run_sum = torch.zeros_like(l_pos)
        acc = torch.zeros_like(q) if need_q else None  # sum_j exp(l_ij - run_max_i) queue_j

        def same(j):  # (B, cols) keys of the query's own image in columns j..j+cols
            return None if query_ids is None else _same_image(query_ids, queue_ids[j : j + cols])

        for j in range(0, num_keys, cols):
            block = queue[:, j : j + cols]
            p = q_s @ block
            mask = same(j)
            if mask is not None:
                p.masked_fill_(mask, float("-inf"))
            new_max = torch.maximum(run_max, p.amax(dim=1))
            if mask is not None:  # only left-out keys can make a row's maximum -inf
                new_max.clamp_min_(_MAX_FLOOR)
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
                p = (q_s @ queue[:, j : j + cols]).sub_(lse[:, None])
                mask = same(j)
                if mask is not None:
                    p.masked_fill_(mask, float("-inf"))
                p.exp_()
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
        return (*grads, None, None, None)
