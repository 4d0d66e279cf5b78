"""BYOL-style regression losses between online predictions and target projections.

SoCo's loss for one direction of a view pair is 2 - 2 cos(p, z) between the online prediction p
of a box in one view and the target projection z of the same box in the other view, averaged
over a image's boxes and then over images. The official code returns -2 * mean(cos) (no
constant); the constant 2 keeps the minimum at 0 and changes no gradient.
"""
import torch
import torch.nn.functional as F

from .precision import at_least_float32

__all__ = ["byol_loss", "symmetric_byol_loss", "masked_level_byol_loss"]


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
    cos = (F.normalize(at_least_float32(pred), dim=1) * F.normalize(at_least_float32(target), dim=1)).sum(dim=1)
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


def masked_level_byol_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    pred_levels: torch.Tensor,
    target_levels: torch.Tensor,
) -> torch.Tensor:
    """The official SoCo formulation: every box at every level, loss masked to assigned levels.

    Embeddings of all L levels of an image are concatenated into L * K rows; a row of ``pred``
    matches a row of ``target`` when both hold the same box at the level that box is assigned
    to in its own view (the levels of the two views may differ). Each image's loss is the mean
    of the matched cosines; the result is averaged over images.

    Args:
        pred: (L, N, K, D) online predictions, box k of image n pooled at level l.
        target: (L, N, K, D) target projections, same layout (the other view).
        pred_levels: (N, K) assigned level of each box in the prediction's view.
        target_levels: (N, K) assigned level of each box in the target's view.

    Returns:
        scalar loss, equal to :func:`byol_loss` on the assigned-level rows up to the 1e-6 the
        official code adds to each image's match count.
    """
    num_levels, n, k, _ = pred.shape
    q = F.normalize(at_least_float32(pred), dim=-1).permute(1, 0, 2, 3).reshape(n, num_levels * k, -1)
    t = F.normalize(at_least_float32(target), dim=-1).permute(1, 0, 2, 3).reshape(n, num_levels * k, -1)
    sim = torch.bmm(q, t.transpose(1, 2))  # (N, L*K, L*K)

    level_ids = torch.arange(num_levels, device=pred.device).view(1, num_levels, 1)
    box_ids = torch.arange(k, device=pred.device).view(1, 1, k).expand(n, num_levels, k)
    # Box id where assigned, distinct "unused" markers per side so unused rows never match.
    ids_q = torch.where(pred_levels.unsqueeze(1) == level_ids, box_ids, -1).reshape(n, -1)
    ids_t = torch.where(target_levels.unsqueeze(1) == level_ids, box_ids, -2).reshape(n, -1)
    corr = (ids_q.unsqueeze(2) == ids_t.unsqueeze(1)).to(sim.dtype)
    per_image = (sim * corr).sum(dim=(1, 2)) / (corr.sum(dim=(1, 2)) + 1e-6)
    return 2.0 - 2.0 * per_image.mean()
