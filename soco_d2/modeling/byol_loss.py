"""BYOL's regression loss between online predictions and target projections, shared by BYOL
(``meta_arch/byol.py``, whole views) and SoCo (``meta_arch/soco.py``, boxes).

SoCo's loss for one direction of a view pair is 2 - 2 cos(p, z) between the online prediction p
of a box in one view and the target projection z of the same box in the other view, averaged
over a image's boxes and then over images. The official code returns -2 * mean(cos) (no
constant); the constant 2 keeps the minimum at 0 and changes no gradient.
"""
import torch
import torch.nn.functional as F

from .precision import at_least_float32

__all__ = ["byol_loss", "symmetric_byol_loss"]


def byol_loss(pred: torch.Tensor, target: torch.Tensor, num_images: int = 1) -> torch.Tensor:
    """2 - 2 cos between matched rows, averaged over boxes per image, then over images.

    Args:
        pred: (M, D) online predictions, M = num_images * K, image-major.
        target: (M, D) target projections of the same boxes (no gradient expected).
        num_images: N; every image has the same number K = M / N of boxes.

    Returns:
        scalar loss in [0, 4].
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    cos = (
        F.normalize(at_least_float32(pred), dim=1) * F.normalize(at_least_float32(target), dim=1)
    ).sum(dim=1)
    # With equal K per image the mean of per-image means is the mean over all boxes.
    return 2.0 - 2.0 * cos.view(num_images, -1).mean(dim=1).mean()


def symmetric_byol_loss(
    pred_i: torch.Tensor,
    target_j: torch.Tensor,
    pred_j: torch.Tensor,
    target_i: torch.Tensor,
    num_images: int = 1,
) -> torch.Tensor:
    """Loss of a view pair (i, j): both directions summed, as the official code sums them.

    Args:
        pred_i, pred_j: (M, D) online predictions of views i and j.
        target_i, target_j: (M, D) target projections of views i and j.
        num_images: N, see :func:`byol_loss`.

    Returns:
        scalar loss in [0, 8].
    """
    return byol_loss(pred_i, target_j, num_images) + byol_loss(pred_j, target_i, num_images)
