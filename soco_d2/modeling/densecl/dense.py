"""DenseCL's dense parts: the dense head, cross-view cell matching and the dense InfoNCE.

DenseCL (Wang et al., CVPR 2021) adds to MoCo v2 a dense branch on the last backbone stage: a
1x1-conv MLP turns the S x S grid of res5 features into S*S embeddings per image. Each query cell
takes as its positive the key-view cell whose *backbone* feature is most similar to its own
(cosine similarity, argmax over the key cells), and the pooled dense key of other images, held
in a second queue, as negatives. The global branch is MoCo v2's head (``meta_arch/moco.py``).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..contrastive import info_nce_loss
from ..precision import at_least_float32

__all__ = [
    "DenseHead",
    "dense_correspondence",
    "gather_matched_cells",
    "dense_info_nce",
    "flatten_grid",
]


class DenseHead(nn.Module):
    """DenseCL's dense projection head: Conv1x1(C, H) -> ReLU -> Conv1x1(H, D) on every cell.

    The per-cell twin of MoCo v2's global MLP head (``MLPHead`` with no norm). Its 1x1 convs keep
    PyTorch's default init, as the official DenseCL neck, whose init touches Linear layers only.

    The parameters are ``Conv2d`` ones (checkpoint names ``conv1.*``, ``conv2.*``), but the forward
    pass applies them as ``F.linear`` on the (B, S*S, C) cells: the same products, as two plain
    GEMMs, which on CPU are faster than 1x1 convolutions on a 7 x 7 map (docs/benchmarks.md).
    """

    def __init__(self, in_channels: int, hidden_dim: int, out_dim: int):
        """
        Args:
            in_channels: C of the feature map (2048 for R-50 res5, 512 for R-18).
            hidden_dim: H, hidden width (official: 2048 = C).
            out_dim: D, embedding width (official: 128, the global head's width).
        """
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_dim, 1)
        self.conv2 = nn.Conv2d(hidden_dim, out_dim, 1)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (B, C, S, S) feature map (res5).

        Returns:
            grid: (B, D, S*S) embedding of every cell, row-major, not normalised.
            pooled: (B, D) average of the cells' embeddings, pooled *before* any normalisation
                (the official neck's order): the vector DenseCL's second queue stores once
                normalised.
        """
        cells = flatten_grid(x).transpose(1, 2)  # (B, S*S, C)
        hidden = F.relu(F.linear(cells, self.conv1.weight.flatten(1), self.conv1.bias))
        grid = F.linear(hidden, self.conv2.weight.flatten(1), self.conv2.bias).transpose(1, 2)
        return grid, grid.mean(dim=2)


def flatten_grid(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W), cells in row-major order (index = row * W + col)."""
    if x.dim() != 4:
        raise ValueError(f"Expected a (B, C, H, W) feature map, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1], -1)


@torch.no_grad()
def dense_correspondence(q_feats: torch.Tensor, k_feats: torch.Tensor) -> torch.Tensor:
    """For every query cell, the key cell with the most similar backbone feature.

    Both maps are flattened to (B, C, S*S) and L2-normalised over channels; the similarity of
    query cell i and key cell j of image b is ``q[b, :, i] . k[b, :, j]``; the match of i is the
    argmax over j (the first index on ties, as ``torch.max``).

    Args:
        q_feats: (B, C, S, S) (or (B, C, S*S)) backbone features of the query view.
        k_feats: (B, C, S', S') (or (B, C, S'*S')) backbone features of the key view.

    Returns:
        (B, S*S) long: index into the key view's flattened cells (row-major).
    """
    q = q_feats if q_feats.dim() == 3 else flatten_grid(q_feats)
    k = k_feats if k_feats.dim() == 3 else flatten_grid(k_feats)
    if q.shape[:2] != k.shape[:2]:
        raise ValueError(
            f"Query and key features need the same batch and channels, got {tuple(q_feats.shape)}"
            f" and {tuple(k_feats.shape)}"
        )
    # float32: half-precision cosine similarities tie too often for a stable argmax
    q = F.normalize(at_least_float32(q), dim=1)
    k = F.normalize(at_least_float32(k), dim=1)
    sim = torch.bmm(q.transpose(1, 2), k)  # (B, S*S query cells, S'*S' key cells)
    return sim.argmax(dim=2)


def gather_matched_cells(k_grid: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """The key embedding at each query cell's matched key cell.

    Args:
        k_grid: (B, D, N_k) key-view dense embeddings.
        match: (B, N_q) long indices into N_k (from :func:`dense_correspondence`).

    Returns:
        (B, D, N_q): column i is ``k_grid[b, :, match[b, i]]``.
    """
    if k_grid.dim() != 3 or match.dim() != 2 or match.shape[0] != k_grid.shape[0]:
        raise ValueError(
            f"k_grid must be (B, D, N) and match (B, N_q), got {tuple(k_grid.shape)} and "
            f"{tuple(match.shape)}"
        )
    index = match.unsqueeze(1).expand(-1, k_grid.shape[1], -1)
    return torch.gather(k_grid, 2, index)


def dense_info_nce(
    q_grid: torch.Tensor,
    k_grid: torch.Tensor,
    match: torch.Tensor,
    queue_keys: torch.Tensor,
    temperature: float,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """DenseCL's dense loss: InfoNCE per query cell, positive at its matched key cell.

    Every one of the B * N_q query cells is one InfoNCE term (averaged over all of them): the
    positive logit is its dot product with the key embedding of its matched cell, the negatives
    are the columns of ``queue_keys`` (pooled dense keys of earlier batches), all over T.

    Args:
        q_grid: (B, D, N_q) query dense embeddings, L2-normalised over D.
        k_grid: (B, D, N_k) key dense embeddings, L2-normalised over D (no gradient needed).
        match: (B, N_q) long, the matched key cell of every query cell.
        queue_keys: (D, K) negatives, L2-normalised columns.
        temperature: T > 0 (DenseCL: 0.2).
        exclude: ``(query_ids, queue_ids)``, (B * N_q,) and (K,) image ids, or None (see
            :func:`~soco_d2.modeling.contrastive.info_nce_loss`).

    Returns:
        scalar loss (float32).
    """
    positives = gather_matched_cells(k_grid, match)
    if positives.shape != q_grid.shape:
        raise ValueError(
            f"q_grid {tuple(q_grid.shape)} and matched keys {tuple(positives.shape)} differ"
        )
    d = q_grid.shape[1]
    # (B, D, N) -> (B * N, D): image-major, then cell, as the official flattening
    q = q_grid.transpose(1, 2).reshape(-1, d)
    k = positives.transpose(1, 2).reshape(-1, d)
    return info_nce_loss(q, k, queue_keys, temperature, exclude)
