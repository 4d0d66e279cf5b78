"""Geometry of DetCo's local view: a square jigsaw crop, its grid cells and one patch per cell.

Layout (all coordinates are XYXY integer pixels of the jigsaw crop, a ``size x size`` image)::

    cell side  s = size // grid               (255 // 3 = 85 in DetCo)
    cell k     = (r, c) with k = r * grid + c (row-major: left to right, then top to bottom)
               = [c * s, r * s, (c + 1) * s, (r + 1) * s]
    patch k    = [c * s + dx_k, r * s + dy_k, c * s + dx_k + p, r * s + dy_k + p]
               with the offsets dx_k, dy_k drawn uniformly in [0, s - p]  (p = 64 in DetCo)

so every patch lies inside its own cell and neighbouring patches never overlap (they are at
least ``0`` and on average ``s - p`` pixels apart: the gap that keeps a model from solving the
task by matching patch borders). The functions here are pure (numpy in, numpy out; randomness
only from the ``rng`` they are given) so the mapper and the tests share one definition.
"""
from typing import Optional

import numpy as np

__all__ = ["cell_side", "grid_cells", "sample_patch_offsets", "patch_boxes", "cut_patches"]


def cell_side(size: int, grid: int, patch: int) -> int:
    """Side of one grid cell, after checking that the layout is possible.

    Args:
        size: side of the square jigsaw crop (INPUT.DETCO.JIGSAW_SIZE).
        grid: cells per side (INPUT.DETCO.JIGSAW_GRID).
        patch: side of the patch cut from each cell (INPUT.DETCO.PATCH_SIZE).

    Returns:
        ``size // grid``.
    """
    if grid < 1:
        raise ValueError(f"INPUT.DETCO.JIGSAW_GRID must be >= 1, got {grid}")
    if size % grid:
        # A remainder would leave a strip no cell covers; ask for an exact split instead.
        raise ValueError(
            f"INPUT.DETCO.JIGSAW_SIZE={size} must be a multiple of INPUT.DETCO.JIGSAW_GRID={grid}"
        )
    side = size // grid
    if not 0 < patch <= side:
        raise ValueError(
            f"INPUT.DETCO.PATCH_SIZE={patch} must be in [1, {side}] (the cell side "
            f"JIGSAW_SIZE / JIGSAW_GRID = {size} / {grid})"
        )
    return side


def grid_cells(size: int, grid: int) -> np.ndarray:
    """The grid cells of a ``size x size`` crop, row-major.

    Args:
        size: crop side; must be a multiple of ``grid``.
        grid: cells per side.

    Returns:
        (grid * grid, 4) int64 XYXY boxes; row ``r * grid + c`` is the cell of row r, column c.
    """
    side = cell_side(size, grid, 1)
    r, c = np.divmod(np.arange(grid * grid), grid)
    return np.stack([c * side, r * side, (c + 1) * side, (r + 1) * side], axis=1).astype(np.int64)


def sample_patch_offsets(
    grid: int, side: int, patch: int, rng: Optional[np.random.RandomState] = None
) -> np.ndarray:
    """Where each patch starts inside its cell, uniformly over the valid positions.

    Args:
        grid: cells per side.
        side: cell side (:func:`cell_side`).
        patch: patch side, ``<= side``.
        rng: a numpy RandomState (default: the global one, seeded per loader worker by
            detectron2).

    Returns:
        (grid * grid, 2) int64 offsets ``(dx, dy)`` in ``[0, side - patch]``, row-major cells.
    """
    if not 0 < patch <= side:
        raise ValueError(f"patch side {patch} must be in [1, {side}]")
    rng = np.random if rng is None else rng
    return rng.randint(0, side - patch + 1, size=(grid * grid, 2)).astype(np.int64)


def patch_boxes(size: int, grid: int, patch: int, offsets: np.ndarray) -> np.ndarray:
    """The patch boxes in the crop's pixels, one per cell, row-major.

    Args:
        size, grid, patch: see :func:`cell_side`.
        offsets: (grid * grid, 2) ``(dx, dy)`` from :func:`sample_patch_offsets`.

    Returns:
        (grid * grid, 4) int64 XYXY boxes, each ``patch`` pixels wide and high, inside its cell.
    """
    side = cell_side(size, grid, patch)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.shape != (grid * grid, 2) or offsets.min() < 0 or offsets.max() > side - patch:
        raise ValueError(
            f"offsets must be ({grid * grid}, 2) in [0, {side - patch}], got shape "
            f"{offsets.shape}"
        )
    cells = grid_cells(size, grid)
    x0 = cells[:, 0] + offsets[:, 0]
    y0 = cells[:, 1] + offsets[:, 1]
    return np.stack([x0, y0, x0 + patch, y0 + patch], axis=1)


def cut_patches(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Slice square patches out of an image.

    Args:
        image: (H, W, C) array (the jigsaw crop).
        boxes: (K, 4) int XYXY boxes of equal size inside the image (:func:`patch_boxes`).

    Returns:
        (K, p, p, C) array, patch k = ``image[y0:y1, x0:x1]`` of box k (a copy).
    """
    boxes = np.asarray(boxes, dtype=np.int64)
    sides = {(int(b[2] - b[0]), int(b[3] - b[1])) for b in boxes}
    if len(sides) != 1:
        raise ValueError(f"patches must share one size, got {sorted(sides)}")
    h, w = image.shape[:2]
    if boxes[:, :2].min() < 0 or boxes[:, 2].max() > w or boxes[:, 3].max() > h:
        raise ValueError(f"patch boxes leave the {w}x{h} image")
    return np.stack([image[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes])
