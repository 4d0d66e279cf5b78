"""DenseCL's dense parts on hand-made tensors: matching, the dense InfoNCE, the neck."""
import math

import pytest
import torch
import torch.nn.functional as F

from soco_d2.modeling.densecl.dense import (
    DenseHead,
    dense_correspondence,
    dense_info_nce,
    flatten_grid,
    gather_matched_cells,
)


def test_correspondence_recovers_a_permutation_despite_cell_scales():
    torch.manual_seed(0)
    b, c, s = 2, 16, 3
    q = torch.randn(b, c, s, s)
    qf = flatten_grid(q)
    perms = [torch.randperm(s * s) for _ in range(b)]
    # Key cell j of image n is query cell perms[n][j], scaled by a very different positive
    # factor per cell: only a per-cell normalisation over channels finds the permutation.
    scales = torch.logspace(-2, 2, s * s)[torch.randperm(s * s)]
    k = torch.stack([qf[n][:, perms[n]] * scales for n in range(b)]).view(b, c, s, s)
    match = dense_correspondence(q, k)
    assert match.shape == (b, s * s) and match.dtype == torch.long
    for n in range(b):
        # query cell i sits at key cell j with perms[n][j] == i: the inverse permutation
        assert torch.equal(match[n], torch.argsort(perms[n]))


def test_correspondence_is_per_image_and_picks_the_most_similar_cell():
    # image 0: key cells (1,0), (0,1); image 1: the same cells swapped
    q = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]] * 2).transpose(1, 2)  # (2, C=2, N=2)
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]).transpose(1, 2)
    assert dense_correspondence(q, k).tolist() == [[0, 1], [1, 0]]


def test_gather_matched_cells():
    k_grid = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    match = torch.tensor([[3, 3, 0], [1, 2, 1]])
    out = gather_matched_cells(k_grid, match)
    assert out.shape == (2, 3, 3)
    for b in range(2):
        for i in range(3):
            assert torch.equal(out[b, :, i], k_grid[b, :, match[b, i]])


def test_dense_info_nce_hand_computed():
    # one image, two cells, D = 2; the key grid is the query grid with its cells swapped
    q_grid = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, D, N): cell 0 = (1,0), cell 1 = (0,1)
    k_grid = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # cell 0 = (0,1), cell 1 = (1,0)
    queue = torch.tensor([[1.0], [0.0]])  # one negative, (1, 0)
    t = 0.5
    match = torch.tensor([[1, 0]])
    # cell 0: logits [1, 1] / T -> log 2; cell 1: logits [1, 0] / T -> log(1 + e^-2)
    expected = (math.log(2.0) + math.log(1.0 + math.exp(-2.0))) / 2
    loss = dense_info_nce(q_grid, k_grid, match, queue, t)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the identity match pairs orthogonal cells: positive logits 0, a different value
    wrong = dense_info_nce(q_grid, k_grid, torch.tensor([[0, 1]]), queue, t)
    expected_wrong = (math.log(1 + math.exp(2.0)) + math.log(2.0)) / 2
    assert wrong.item() == pytest.approx(expected_wrong, rel=1e-6)


def test_dense_info_nce_gradient_reaches_queries_only_through_matched_positives():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(2, 4, 9), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(2, 4, 9), dim=1)
    queue = F.normalize(torch.randn(4, 5), dim=0)
    match = dense_correspondence(q.detach(), k)
    loss = dense_info_nce(q, k, match, queue, 0.2)
    loss.backward()
    assert torch.isfinite(loss) and q.grad.abs().sum() > 0


def test_dense_head_shapes_names_and_pooled_before_normalisation():
    torch.manual_seed(0)
    head = DenseHead(8, 16, 4)
    x = torch.randn(3, 8, 2, 2)
    grid, pooled = head(x)
    assert grid.shape == (3, 4, 4) and pooled.shape == (3, 4)
    torch.testing.assert_close(pooled, grid.mean(dim=2))
    # pooled before normalising: not the mean of the normalised cells
    assert not torch.allclose(F.normalize(pooled, dim=1), F.normalize(grid, dim=1).mean(2))
    # a per-cell MLP: cell (r, c) = row-major index r * W + c depends on x[:, :, r, c] only
    cell = head.conv2(torch.relu(head.conv1(x[:, :, 1:2, 0:1]))).flatten(1)
    torch.testing.assert_close(grid[:, :, 2], cell)
    assert set(head.state_dict()) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}


def test_dense_head_equals_its_convs_in_both_memory_formats_and_gradients():
    """The linear-path forward is the 1x1 convs' math, on NCHW and channels_last maps alike."""
    torch.manual_seed(0)
    head = DenseHead(6, 10, 5)
    x = torch.randn(2, 6, 3, 3)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        inp = inp.detach().requires_grad_()
        ref_in = inp.detach().clone().requires_grad_()
        grid, _ = head(inp)
        ref = head.conv2(torch.relu(head.conv1(ref_in))).flatten(2)
        torch.testing.assert_close(grid, ref)
        w = torch.randn_like(ref)
        g_ours = torch.autograd.grad((grid * w).sum(), [inp, head.conv1.weight])
        g_ref = torch.autograd.grad((ref * w).sum(), [ref_in, head.conv1.weight])
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b)


def test_bad_shapes_fail_clearly():
    with pytest.raises(ValueError, match="same batch and channels"):
        dense_correspondence(torch.randn(1, 3, 2, 2), torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match="differ"):
        dense_info_nce(torch.randn(1, 3, 4), torch.randn(1, 3, 5), torch.zeros(1, 2).long(),
                       torch.randn(3, 2), 0.2)
