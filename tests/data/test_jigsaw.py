"""Jigsaw geometry (soco_d2/data/jigsaw.py): exact cells, patches inside their cells, order."""
import numpy as np
import pytest

from soco_d2.data.jigsaw import (
    cell_side,
    cut_patches,
    grid_cells,
    patch_boxes,
    sample_patch_offsets,
)


def test_paper_grid_cells_are_85px_row_major():
    cells = grid_cells(255, 3)
    assert cells.tolist() == [
        [0, 0, 85, 85], [85, 0, 170, 85], [170, 0, 255, 85],
        [0, 85, 85, 170], [85, 85, 170, 170], [170, 85, 255, 170],
        [0, 170, 85, 255], [85, 170, 170, 255], [170, 170, 255, 255],
    ]
    assert cell_side(255, 3, 64) == 85


def test_patch_boxes_are_offsets_from_their_cell_corner():
    offsets = np.array(
        [[0, 0], [21, 0], [0, 21], [21, 21], [5, 7], [0, 13], [9, 0], [1, 2], [21, 3]]
    )
    boxes = patch_boxes(255, 3, 64, offsets)
    # Cell (1, 1) starts at (85, 85); patch 4 at offset (5, 7) -> [90, 92, 154, 156].
    assert boxes[4].tolist() == [90, 92, 154, 156]
    # The largest offset 85 - 64 = 21 ends on the cell border: cell (0, 2) at (170, 0) with
    # (0, 21), cell (2, 2) at (170, 170) with (21, 3).
    assert boxes[2].tolist() == [170, 21, 234, 85]
    assert boxes[8].tolist() == [191, 173, 255, 237]
    assert (boxes[:, 2] - boxes[:, 0] == 64).all() and (boxes[:, 3] - boxes[:, 1] == 64).all()


def test_sampled_patches_stay_inside_their_own_cell():
    rng = np.random.RandomState(0)
    cells = grid_cells(72, 3)
    seen = set()
    for _ in range(200):
        offsets = sample_patch_offsets(3, 24, 18, rng)
        seen.update(offsets.ravel().tolist())
        boxes = patch_boxes(72, 3, 18, offsets)
        assert (boxes[:, :2] >= cells[:, :2]).all() and (boxes[:, 2:] <= cells[:, 2:]).all()
    # Every start position 0..cell-patch is reachable, including both extremes.
    assert seen == set(range(0, 24 - 18 + 1))


def test_offsets_come_from_the_given_generator():
    a = sample_patch_offsets(3, 85, 64, np.random.RandomState(3))
    b = sample_patch_offsets(3, 85, 64, np.random.RandomState(3))
    assert a.shape == (9, 2) and (a == b).all()


def test_cut_patches_keeps_cell_order():
    # Pixel value = index of the cell it lies in (row-major), so patch k must be all k.
    size, grid = 36, 3
    cell_of = np.arange(size) // (size // grid)
    image = (cell_of[:, None] * grid + cell_of[None, :]).astype(np.uint8)[..., None].repeat(3, 2)
    offsets = np.random.RandomState(1).randint(0, 3, size=(9, 2))
    patches = cut_patches(image, patch_boxes(size, grid, 10, offsets))
    assert patches.shape == (9, 10, 10, 3)
    for k in range(9):
        assert (patches[k] == k).all(), k


def test_impossible_layouts_name_the_config_key():
    with pytest.raises(ValueError, match="JIGSAW_SIZE=100 must be a multiple of"):
        grid_cells(100, 3)
    with pytest.raises(ValueError, match="PATCH_SIZE=90"):
        cell_side(255, 3, 90)
    with pytest.raises(ValueError, match="offsets"):
        patch_boxes(255, 3, 64, np.full((9, 2), 22))
