"""Fixed 2-D sin-cos position embeddings: absolute (one view's grid) and relative (view 2's
cells placed in view 1's grid), as Siamese Image Modeling defines them.

Frequencies: ``omega_k = 10000^(-k / (D/4))`` for ``k < D/4``.

Absolute embedding of cell (r, c) of a g x g grid, width D (row first, then column)::

    [sin(r omega), cos(r omega), sin(c omega), cos(c omega)]                      (D values)

Relative embedding of cell (r, c) of view 2, width 2D: with view 2's cell centres expressed in
view 1's grid units (:func:`relative_coordinates`: ``h`` rows, ``w`` columns) and the size
ratios ``dh = h2 / h1``, ``dw = w2 / w1`` of the two crops::

    [sin(h omega), cos(h omega), sin(w omega), cos(w omega),
     sin(10 ln dh omega), cos(10 ln dh omega), sin(10 ln dw omega), cos(10 ln dw omega)]

For identical views (same crop, same flip) ``h = r``, ``w = c`` and ``dh = dw = 1``: the first D
values are the absolute embedding and the scale half is ``[0, 1, 0, 1]`` per frequency.
"""
from typing import Tuple

import torch

__all__ = [
    "sincos_frequencies",
    "sincos_pos_embed_2d",
    "relative_coordinates",
    "relative_pos_embed",
]


def sincos_frequencies(dim: int) -> torch.Tensor:
    """(dim // 4,) float32 frequencies ``10000^(-k / (dim / 4))``; ``dim`` divisible by 4."""
    if dim % 4:
        raise ValueError(f"sin-cos embedding width must be divisible by 4, got {dim}")
    k = torch.arange(dim // 4, dtype=torch.float64)
    return (1.0 / 10000 ** (k / (dim / 4))).float()


def _sincos(pos: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """(..., ) positions -> (..., 2 * len(omega)) ``[sin(pos omega), cos(pos omega)]``."""
    out = pos.unsqueeze(-1).double() * omega.double()
    return torch.cat([out.sin(), out.cos()], dim=-1).float()


def sincos_pos_embed_2d(dim: int, grid_size: int, cls_token: bool = False) -> torch.Tensor:
    """Absolute embedding of a ``grid_size`` x ``grid_size`` grid in row-major order.

    Args:
        dim: embedding width D (divisible by 4).
        grid_size: g.
        cls_token: prepend an all-zero row for the cls token.

    Returns:
        (g*g, D), or (1 + g*g, D) with ``cls_token``.
    """
    omega = sincos_frequencies(dim)
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float32),
        torch.arange(grid_size, dtype=torch.float32),
        indexing="ij",
    )
    emb = torch.cat([_sincos(rows.reshape(-1), omega), _sincos(cols.reshape(-1), omega)], dim=1)
    if cls_token:
        emb = torch.cat([emb.new_zeros(1, dim), emb], dim=0)
    return emb


def relative_coordinates(
    regions: torch.Tensor, flipped: torch.Tensor, image_width: torch.Tensor, grid_size: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres of view 2's cells in view 1's grid units, and the crop size ratios.

    The views are crops of one image (``regions``, XYXY in original pixels), each resized to a
    g x g grid and then mirrored when ``flipped``. Cell (r, c) of view 2 is where view 2 shows
    it (after its flip); its centre is mapped to original pixels, then into view 1 as view 1
    shows it (after its flip), in units of view 1's cells, minus 0.5 so that view 1's own cell
    (r, c) sits at (r, c).

    Args:
        regions: (B, 2, 4) float crop regions of view 1 and view 2.
        flipped: (B, 2) bool, view flipped horizontally after its crop.
        image_width: (B,) original image widths W.
        grid_size: g.

    Returns:
        ``h``, ``w``: (B, g*g) row and column coordinates of view 2's cells (row-major);
        ``dh``, ``dw``: (B,) size ratios ``h2 / h1`` and ``w2 / w1``.
    """
    regions = regions.double()
    g = grid_size
    x0, y0, x1, y1 = regions.unbind(-1)  # each (B, 2)
    hgt, wid = y1 - y0, x1 - x0
    # The crop's left edge as the network sees it: in the mirrored image for a flipped view
    # (flip-then-crop and crop-then-flip give the same pixels).
    left = torch.where(flipped.bool(), image_width.double()[:, None] - x1, x0)
    di = (y0[:, 1] - y0[:, 0]) / hgt[:, 0]
    dj = (left[:, 1] - left[:, 0]) / wid[:, 0]
    dh = hgt[:, 1] / hgt[:, 0]
    dw = wid[:, 1] / wid[:, 0]
    flip_dj = (image_width.double() - left[:, 0] - left[:, 1]) / wid[:, 0]
    relative_flip = flipped[:, 0].bool() ^ flipped[:, 1].bool()

    r, c = torch.meshgrid(
        torch.arange(g, dtype=torch.float64), torch.arange(g, dtype=torch.float64), indexing="ij"
    )
    r, c = r.reshape(1, -1) + 0.5, c.reshape(1, -1) + 0.5
    h = dh[:, None] * r + di[:, None] * g - 0.5
    w_same = dw[:, None] * c + dj[:, None] * g - 0.5
    # One view mirrored relative to the other: columns run the other way.
    w_flip = -dw[:, None] * c + flip_dj[:, None] * g - 0.5
    w = torch.where(relative_flip[:, None], w_flip, w_same)
    return h.float(), w.float(), dh.float(), dw.float()


def relative_pos_embed(
    regions: torch.Tensor,
    flipped: torch.Tensor,
    image_width: torch.Tensor,
    grid_size: int,
    dim: int,
) -> torch.Tensor:
    """Relative embedding of view 2's cells (see module docstring).

    Args:
        regions, flipped, image_width, grid_size: see :func:`relative_coordinates`.
        dim: D, the decoder width (divisible by 4); the output has 2D values.

    Returns:
        (B, g*g, 2D) float32, no gradient.
    """
    omega = sincos_frequencies(dim)
    h, w, dh, dw = relative_coordinates(regions, flipped, image_width, grid_size)
    n = h.shape[1]
    scale_h = _sincos(10 * torch.log(dh.double()), omega).unsqueeze(1).expand(-1, n, -1)
    scale_w = _sincos(10 * torch.log(dw.double()), omega).unsqueeze(1).expand(-1, n, -1)
    return torch.cat([_sincos(h, omega), _sincos(w, omega), scale_h, scale_w], dim=-1)
