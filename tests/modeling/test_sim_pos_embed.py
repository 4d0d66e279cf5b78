"""SIM's absolute and relative sin-cos position embeddings against hand-computed values."""
import math

import pytest
import torch

from soco_d2.modeling.sim import (
    relative_coordinates,
    relative_pos_embed,
    sincos_frequencies,
    sincos_pos_embed_2d,
)


def _geometry(region1, flip1, region2, flip2, width=100.0):
    regions = torch.tensor([[region1, region2]], dtype=torch.float32)
    flipped = torch.tensor([[flip1, flip2]])
    return regions, flipped, torch.tensor([width])


def _pixel_centre_coordinates(region1, flip1, region2, flip2, g):
    """Independent derivation: each view-2 cell centre in original pixels, then in view 1's
    displayed grid (mirrored when view 1 is), in cell units, minus 0.5."""
    x0a, y0a, x1a, y1a = region1
    x0b, y0b, x1b, y1b = region2
    hs, ws = [], []
    for r in range(g):
        for c in range(g):
            col = g - 1 - c if flip2 else c  # the crop column a displayed column shows
            x = x0b + (col + 0.5) * (x1b - x0b) / g
            y = y0b + (r + 0.5) * (y1b - y0b) / g
            u = (x - x0a) / ((x1a - x0a) / g)
            if flip1:
                u = g - u
            hs.append((y - y0a) / ((y1a - y0a) / g) - 0.5)
            ws.append(u - 0.5)
    return torch.tensor(hs), torch.tensor(ws)


def test_absolute_embedding_values():
    emb = sincos_pos_embed_2d(8, 2, cls_token=True)  # omega = [1, 0.01]
    assert emb.shape == (5, 8)
    assert torch.equal(emb[0], torch.zeros(8))
    # cell (r=1, c=0): rows first, then columns
    expected = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01), 0, 0, 1, 1]
    torch.testing.assert_close(emb[3], torch.tensor(expected), rtol=0, atol=1e-6)
    torch.testing.assert_close(sincos_frequencies(8), torch.tensor([1.0, 0.01]))


@pytest.mark.parametrize("flip", [False, True])
def test_identical_views_give_the_absolute_embedding(flip):
    dim, g = 16, 3
    rel = relative_pos_embed(*_geometry((10, 5, 70, 50), flip, (10, 5, 70, 50), flip), g, dim)
    assert rel.shape == (1, g * g, 2 * dim)
    torch.testing.assert_close(rel[0, :, :dim], sincos_pos_embed_2d(dim, g), rtol=0, atol=1e-6)
    # scale half: sin(0) and cos(0) for both ratios
    quarter = dim // 4
    ones, zeros = torch.ones(g * g, quarter), torch.zeros(g * g, quarter)
    torch.testing.assert_close(rel[0, :, dim:], torch.cat([zeros, ones, zeros, ones], 1))


@pytest.mark.parametrize(
    "flip1, flip2, expected_w",
    [
        (False, False, [0.75, 1.25]),  # view 2 = bottom-right quarter, half the size
        (False, True, [1.25, 0.75]),  # view 2 mirrored: its first column is the right one
        (True, False, [0.25, -0.25]),  # view 1 mirrored
        (True, True, [-0.25, 0.25]),  # both mirrored
    ],
)
def test_shifted_scaled_and_flipped_pairs(flip1, flip2, expected_w):
    # view 1 = (0,0)-(40,40) on a 2x2 grid (20 px cells); view 2 = (20,20)-(40,40) (10 px cells)
    h, w, dh, dw = relative_coordinates(
        *_geometry((0, 0, 40, 40), flip1, (20, 20, 40, 40), flip2), grid_size=2
    )
    torch.testing.assert_close(h[0], torch.tensor([0.75, 0.75, 1.25, 1.25]))
    torch.testing.assert_close(w[0], torch.tensor(expected_w * 2))
    assert dh.item() == 0.5 and dw.item() == 0.5


@pytest.mark.parametrize("flip1, flip2", [(False, False), (False, True), (True, False), (True, True)])
def test_coordinates_match_pixel_centres_for_arbitrary_crops(flip1, flip2):
    r1, r2, g = (13.0, 7.0, 61.0, 47.0), (30.0, 2.0, 98.0, 39.0), 4
    h, w, dh, dw = relative_coordinates(*_geometry(r1, flip1, r2, flip2), grid_size=g)
    eh, ew = _pixel_centre_coordinates(r1, flip1, r2, flip2, g)
    torch.testing.assert_close(h[0], eh, rtol=0, atol=1e-5)
    torch.testing.assert_close(w[0], ew, rtol=0, atol=1e-5)
    assert dh.item() == pytest.approx(37 / 40) and dw.item() == pytest.approx(68 / 48)


def test_relative_embedding_encodes_coordinates_and_log_scales():
    dim, g = 8, 2
    geom = _geometry((0, 0, 40, 40), False, (20, 20, 40, 40), False)
    rel = relative_pos_embed(*geom, g, dim)[0]
    h, w, _, _ = relative_coordinates(*geom, g)
    omega = torch.tensor([1.0, 0.01])
    k = 3  # cell (1, 1)
    s = 10 * math.log(0.5) * omega
    expected = torch.cat([
        torch.sin(h[0, k] * omega), torch.cos(h[0, k] * omega),
        torch.sin(w[0, k] * omega), torch.cos(w[0, k] * omega),
        torch.sin(s), torch.cos(s), torch.sin(s), torch.cos(s),
    ])
    torch.testing.assert_close(rel[k], expected, rtol=0, atol=1e-6)


def test_width_must_divide_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(6, 2)
