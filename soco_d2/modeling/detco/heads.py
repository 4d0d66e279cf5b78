"""DetCo's projection heads: one global and one local MLP on each ResNet stage.

Global head of a level: average-pool the stage's (N, C, h, w) map to (N, C), then an MLP to
the embedding (MoCo v2's Linear-ReLU-Linear; ``MLPHead`` with no norm).

Local head of a level: each of the G*G jigsaw patches of an image goes through the same
backbone; their pooled (C,) features are concatenated in cell order (row-major, patch 0
first) to one (G*G * C,) vector, and an MLP projects it to one local embedding per image.

Patch batches are laid out cell-major, ``(G*G * N, 3, P, P)`` with patch k of image n at row
``k * N + n``: a BatchNorm that groups a batch by ``row % splits`` (``SplitBatchNorm``) then
puts all patches of one image in the same group as that image's global view, which is what
shuffle-BN needs to hide the positive pair from batch statistics.

Embeddings are L2-normalised, as InfoNCE expects.
"""
from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import MLPHead

__all__ = ["DetCoHeads", "pool_levels", "patches_to_images"]


def pool_levels(
    features: Mapping[str, torch.Tensor], levels: Sequence[str]
) -> Dict[str, torch.Tensor]:
    """Global average pooling of each requested level.

    Args:
        features: backbone outputs, level -> (M, C, h, w).
        levels: names to pool.

    Returns:
        level -> (M, C) float tensors.
    """
    return {lvl: features[lvl].mean(dim=(2, 3)) for lvl in levels}


def patches_to_images(pooled: torch.Tensor, num_images: int) -> torch.Tensor:
    """Concatenate cell-major pooled patch features into one vector per image.

    Args:
        pooled: (G*G * N, C), row ``k * N + n`` = patch k of image n.
        num_images: N.

    Returns:
        (N, G*G * C): row n = [patch 0 of n, patch 1 of n, ...], each C wide.
    """
    m, c = pooled.shape
    if num_images <= 0 or m % num_images:
        raise ValueError(f"{m} patch features cannot be split over {num_images} images")
    return pooled.view(m // num_images, num_images, c).transpose(0, 1).reshape(num_images, -1)


class DetCoHeads(nn.Module):
    """Per-level global (and optionally local) projection heads.

    Submodules: ``global_heads.<level>`` and ``local_heads.<level>`` (``MLPHead``s), so the
    checkpoint keys say which head is which; a detector never loads them.
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        *,
        out_dim: int,
        global_hidden: Mapping[str, int],
        local_hidden: Optional[Mapping[str, int]],
        num_patches: int,
        norm: str = "",
    ):
        """
        Args:
            in_channels: level -> channels C of that backbone output (``ShapeSpec.channels``).
            out_dim: embedding width D (128).
            global_hidden: level -> hidden width of its global MLP.
            local_hidden: level -> hidden width of its local MLP; None: no local heads.
            num_patches: G*G, the patches concatenated by a local head.
            norm: norm inside the MLPs ("" for MoCo v2's, "BN", "SyncBN").
        """
        super().__init__()
        self.levels = list(in_channels)
        self.num_patches = int(num_patches)
        self.global_heads = nn.ModuleDict(
            {
                lvl: MLPHead(c, int(global_hidden[lvl]), out_dim, norm)
                for lvl, c in in_channels.items()
            }
        )
        self.local_heads = None
        if local_hidden is not None:
            self.local_heads = nn.ModuleDict(
                {
                    lvl: MLPHead(self.num_patches * c, int(local_hidden[lvl]), out_dim, norm)
                    for lvl, c in in_channels.items()
                }
            )

    def forward_global(self, features: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """level -> (N, D) normalised global embeddings of a batch of global views."""
        pooled = pool_levels(features, self.levels)
        return {lvl: F.normalize(self.global_heads[lvl](x), dim=1) for lvl, x in pooled.items()}

    def forward_local(
        self, features: Mapping[str, torch.Tensor], num_images: int
    ) -> Dict[str, torch.Tensor]:
        """level -> (N, D) normalised local embeddings from cell-major patch features.

        Args:
            features: backbone outputs of the (G*G * N, 3, P, P) patch batch.
            num_images: N.
        """
        if self.local_heads is None:
            raise RuntimeError("DetCoHeads was built without local heads (MODEL.DETCO.LOCAL)")
        pooled = pool_levels(features, self.levels)
        out = {}
        for lvl, x in pooled.items():
            if x.shape[0] != self.num_patches * num_images:
                raise ValueError(
                    f"expected {self.num_patches} patches per image for {num_images} images, got "
                    f"{x.shape[0]} patch features"
                )
            out[lvl] = F.normalize(self.local_heads[lvl](patches_to_images(x, num_images)), dim=1)
        return out
