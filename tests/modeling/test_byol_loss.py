"""BYOL loss (shared by BYOL and SoCo): value, symmetry, per-image averaging, gradients."""
import math

import torch

from soco_d2.modeling.byol_loss import byol_loss, symmetric_byol_loss


def test_zero_for_identical_and_scaled_outputs_four_for_opposite():
    x = torch.randn(8, 16)
    assert byol_loss(x, x.clone(), 2).abs() < 1e-6
    assert byol_loss(x, 3.0 * x, 2).abs() < 1e-6  # L2-normalized: scale does not matter
    assert torch.isclose(byol_loss(x, -x, 2), torch.tensor(4.0))
    assert symmetric_byol_loss(x, x, x, x, 2).abs() < 1e-6


def test_value_is_two_minus_two_cos_averaged_per_image():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    img0 = 2 - 2 * (math.cos(math.pi / 4) + 1) / 2
    img1 = 2 - 2 * (0 + 1) / 2
    assert torch.isclose(byol_loss(p, t, num_images=2), torch.tensor((img0 + img1) / 2))


def test_pair_loss_is_symmetric_and_sums_both_directions():
    pi, pj, ti, tj = (torch.randn(6, 8) for _ in range(4))
    a = symmetric_byol_loss(pi, tj, pj, ti, 3)
    assert torch.isclose(a, symmetric_byol_loss(pj, ti, pi, tj, 3))
    assert torch.isclose(a, byol_loss(pi, tj, 3) + byol_loss(pj, ti, 3))


def test_gradient_only_flows_to_the_prediction():
    p = torch.randn(4, 8, requires_grad=True)
    t = torch.randn(4, 8)
    byol_loss(p, t).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
