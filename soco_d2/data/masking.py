"""Block-wise masking of a patch grid (BEiT's generator, as SIM uses it) with an exact count.

Rectangular blocks of at least ``min_block`` patches with aspect ratio (rows / columns) drawn
log-uniformly in ``[min_aspect, 1 / min_aspect]`` are placed at random until the mask holds
``num_masked`` patches; a block is only placed if it adds new patches and does not overshoot.
When no further block fits (10 failed draws), random single patches top the mask up, so every
mask of a batch has exactly ``num_masked`` patches and the visible tokens stack into one tensor.

Randomness comes from a ``numpy.random.Generator`` passed in, or ``np.random`` (which
detectron2 seeds per data-loader worker).
"""
import math
from typing import Optional, Tuple

import numpy as np

__all__ = ["BlockMaskingGenerator"]


class BlockMaskingGenerator:
    """Draw (H, W) boolean masks with exactly ``num_masked`` True (masked) patches."""

    def __init__(
        self,
        grid_size: Tuple[int, int],
        num_masked: int,
        min_block: int = 16,
        max_block: Optional[int] = None,
        min_aspect: float = 0.3,
        max_aspect: Optional[float] = None,
    ):
        """
        Args:
            grid_size: (H, W) patches.
            num_masked: patches to mask per draw (INPUT.SIM.NUM_MASKING_PATCHES), 0 <= n <= H*W.
            min_block: smallest block area in patches (BEiT: 16).
            max_block: largest block area (None: ``num_masked``).
            min_aspect: smallest rows/columns ratio of a block (BEiT: 0.3).
            max_aspect: largest ratio (None: ``1 / min_aspect``).
        """
        self.height, self.width = int(grid_size[0]), int(grid_size[1])
        if not 0 <= num_masked <= self.height * self.width:
            raise ValueError(
                f"INPUT.SIM.NUM_MASKING_PATCHES must be in [0, {self.height * self.width}] for a "
                f"{self.height}x{self.width} grid, got {num_masked}"
            )
        if not 0 < min_aspect <= (max_aspect or 1.0 / min_aspect):
            raise ValueError(f"INPUT.SIM.MASK_MIN_ASPECT must be in (0, 1], got {min_aspect}")
        self.num_masked = int(num_masked)
        self.min_block = int(min_block)
        self.max_block = self.num_masked if max_block is None else int(max_block)
        max_aspect = max_aspect or 1.0 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    def __repr__(self) -> str:
        return (
            f"BlockMaskingGenerator({self.height}x{self.width}, masked={self.num_masked}, "
            f"block=[{self.min_block}, {self.max_block}])"
        )

    def place_block(self, mask: np.ndarray, budget: int, rng) -> int:
        """Try up to 10 random blocks; mask the first that adds 1..``budget`` new patches.

        Args:
            mask: (H, W) bool, modified in place.
            budget: most patches this block may add.
            rng: ``numpy.random.Generator`` or the ``np.random`` module.

        Returns:
            the number of patches newly masked (0 if no draw fitted).
        """
        for _ in range(10):
            # as Python's random.uniform: also defined when budget < min_block (a last block
            # smaller than min_block still gets drawn, as BEiT's generator does)
            area = self.min_block + (budget - self.min_block) * rng.random()
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            # strict, as BEiT: a block never spans the whole grid side
            if not (0 < w < self.width and 0 < h < self.height):
                continue
            top = _randint(rng, self.height - h + 1)
            left = _randint(rng, self.width - w + 1)
            window = mask[top : top + h, left : left + w]
            added = h * w - int(window.sum())
            if 0 < added <= budget:
                window[...] = True
                return added
        return 0

    def __call__(self, rng=None) -> np.ndarray:
        """One mask.

        Args:
            rng: ``numpy.random.Generator``; default the global ``np.random``.

        Returns:
            (H, W) bool array with exactly ``num_masked`` True entries.
        """
        rng = np.random if rng is None else rng
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < self.num_masked:
            added = self.place_block(mask, min(self.num_masked - count, self.max_block), rng)
            if added == 0:
                break
            count += added
        if count < self.num_masked:  # top up with random unmasked patches
            free = np.flatnonzero(~mask.reshape(-1))
            pick = rng.permutation(free)[: self.num_masked - count]
            mask.reshape(-1)[pick] = True
        return mask


def _randint(rng, high: int) -> int:
    """An integer in [0, high) from a ``Generator`` or the ``np.random`` module."""
    return int(rng.integers(0, high) if hasattr(rng, "integers") else rng.randint(0, high))
