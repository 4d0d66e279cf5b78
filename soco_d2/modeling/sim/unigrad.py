"""UniGrad loss (SIM's objective), in float32, with the batch correlation shared by all ranks.

For predictions ``p`` and targets ``t`` (N tokens of width D; ``t`` layer-normalised without
affine parameters, never differentiated)::

    pos  = mean over tokens of ||p - t||^2
    C    = t^T t / N                    (D x D; averaged over processes when distributed)
    neg  = mean over tokens of p^T C p
    loss = (pos + neg_weight * neg) / D

The positive term pulls each prediction onto its target; the negative term pushes predictions
away from the directions the targets occupy, which keeps them from collapsing.
"""
from typing import Dict

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm

__all__ = ["unigrad_loss", "target_correlation", "correlation_spectrum"]


@torch.no_grad()
def target_correlation(target: torch.Tensor) -> torch.Tensor:
    """``t^T t / N`` of (N, D) targets, averaged over processes (single process: as is).

    Every rank must call it with the same D (an all-reduce over the default group).
    """
    corr = target.T @ target / target.shape[0]
    world = comm.get_world_size()
    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(corr)
        corr = corr / world
    return corr


def unigrad_loss(
    pred: torch.Tensor, target: torch.Tensor, neg_weight: float = 0.02, eps: float = 1e-5
) -> Dict[str, torch.Tensor]:
    """The UniGrad loss and its two terms.

    Args:
        pred: (..., D) online predictions (any float dtype; computed in float32).
        target: (..., D) target projections, same leading shape; no gradient flows into them.
        neg_weight: weight of the negative term (MODEL.SIM.NEG_WEIGHT, SIM: 0.02).
        eps: LayerNorm epsilon of the target normalisation (torch's default, as SIM's).

    Returns:
        ``{"loss": scalar, "pos": scalar, "neg": scalar}`` (float32).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    dim = pred.shape[-1]
    device_type = pred.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        p = pred.float().reshape(-1, dim)
        with torch.no_grad():
            t = F.layer_norm(target.float().reshape(-1, dim), (dim,), eps=eps)
            corr = target_correlation(t)
        pos = (p - t).pow(2).sum(-1).mean()
        neg = ((p @ corr) * p).sum(-1).mean()
        loss = (pos + neg_weight * neg) / dim
    return {"loss": loss, "pos": pos.detach(), "neg": neg.detach()}


@torch.no_grad()
def correlation_spectrum(tokens: torch.Tensor, eps: float = 1e-5) -> Dict[str, float]:
    """How many directions layer-normalised tokens occupy, from the loss's ``C = t^T t / N``.

    Each token is layer-normalised as the loss's targets are, so ``trace(C) = D``. A batch whose
    tokens all point one way has one non-zero eigenvalue (``top1`` 1, ``erank`` 1); tokens
    spread evenly over D directions have ``top1`` 1/D and ``erank`` D. UniGrad's negative term
    pushes predictions away from the large eigenvalues, so a spectrum held by a few directions
    is what a (near) collapsed target looks like.

    Args:
        tokens: (..., D) tokens.

    Returns:
        ``{"top1", "top3"}``: shares of the trace in the largest one / three eigenvalues;
        ``"erank"``: exp of the entropy of the eigenvalue shares (1..D); ``"dim"``: D.
    """
    dim = tokens.shape[-1]
    t = F.layer_norm(tokens.double().reshape(-1, dim), (dim,), eps=eps)
    ev = torch.linalg.eigvalsh(t.T @ t / t.shape[0]).flip(0).clamp_min(0)
    share = ev / ev.sum()
    entropy = -(share * share.clamp_min(1e-300).log()).sum()
    return {"top1": float(share[0]), "top3": float(share[:3].sum()),
            "erank": float(entropy.exp()), "dim": dim}
