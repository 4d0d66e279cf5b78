"""SIM's block masking: exact counts, BEiT blocks within the aspect range."""
import numpy as np
import pytest

from soco_d2.data.masking import BlockMaskingGenerator


@pytest.mark.parametrize("grid, n", [((14, 14), 118), ((8, 8), 38), ((8, 8), 60), ((4, 4), 9),
                                     ((14, 14), 0)])
def test_masks_exactly_the_configured_number(grid, n):
    gen = BlockMaskingGenerator(grid, n, min_block=16 if grid[0] == 14 else 4)
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = gen(rng)
        assert mask.shape == grid and mask.dtype == bool
        assert int(mask.sum()) == n


def test_square_blocks_only_when_aspect_is_one():
    # area 16 exactly (min = max = 16) with aspect 1: every mask is one 4x4 block
    gen = BlockMaskingGenerator((14, 14), 16, min_block=16, min_aspect=1.0)
    rng = np.random.default_rng(1)
    for _ in range(30):
        rows, cols = np.nonzero(gen(rng))
        assert rows.max() - rows.min() + 1 == 4 and cols.max() - cols.min() + 1 == 4


def test_blocks_stay_within_the_aspect_range():
    gen = BlockMaskingGenerator((14, 14), 16, min_block=16, min_aspect=0.3)
    rng = np.random.default_rng(2)
    ratios = []
    for _ in range(200):
        mask = np.zeros((14, 14), dtype=bool)
        added = gen.place_block(mask, 16, rng)
        rows, cols = np.nonzero(mask)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert added == h * w == mask.sum()  # one solid rectangle
        ratios.append(h / w)
    # area 16, aspect in [0.3, 1/0.3]: the most elongated rounded blocks are 2x7 and 7x2
    assert min(ratios) >= 2 / 7 and max(ratios) <= 7 / 2
    assert min(ratios) < 1 < max(ratios)  # both orientations occur


def test_bad_count_names_the_key():
    with pytest.raises(ValueError, match="INPUT.SIM.NUM_MASKING_PATCHES"):
        BlockMaskingGenerator((4, 4), 17)
