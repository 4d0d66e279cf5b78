"""SoCo's loss in the official formulation (``MODEL.SOCO.ASSIGNMENT "all_levels"``): every box
pooled at every level, matched only at the level each box is assigned to (``assign.py``). The
default ``"level"`` pools each box once and uses the shared ``byol_loss.symmetric_byol_loss``;
``tests/modeling/test_soco_equivalence.py`` shows where the two agree.
"""
import torch
import torch.nn.functional as F

from ..precision import at_least_float32

__all__ = ["masked_level_byol_loss"]


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
        scalar loss, equal to ``byol_loss.byol_loss`` on the assigned-level rows up to the 1e-6 the
        official code adds to each image's match count.
    """
    num_levels, n, k, _ = pred.shape
    q = (
        F.normalize(at_least_float32(pred), dim=-1)
        .permute(1, 0, 2, 3)
        .reshape(n, num_levels * k, -1)
    )
    t = (
        F.normalize(at_least_float32(target), dim=-1)
        .permute(1, 0, 2, 3)
        .reshape(n, num_levels * k, -1)
    )
    sim = torch.bmm(q, t.transpose(1, 2))  # (N, L*K, L*K)

    level_ids = torch.arange(num_levels, device=pred.device).view(1, num_levels, 1)
    box_ids = torch.arange(k, device=pred.device).view(1, 1, k).expand(n, num_levels, k)
    # Box id where assigned, distinct "unused" markers per side so unused rows never match.
    ids_q = torch.where(pred_levels.unsqueeze(1) == level_ids, box_ids, -1).reshape(n, -1)
    ids_t = torch.where(target_levels.unsqueeze(1) == level_ids, box_ids, -2).reshape(n, -1)
    corr = (ids_q.unsqueeze(2) == ids_t.unsqueeze(1)).to(sim.dtype)
    per_image = (sim * corr).sum(dim=(1, 2)) / (corr.sum(dim=(1, 2)) + 1e-6)
    return 2.0 - 2.0 * per_image.mean()
