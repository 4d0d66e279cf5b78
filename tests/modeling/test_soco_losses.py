"""SoCo's official loss (every level, masked to the assigned one) against BYOL's loss on the
assigned rows."""
import torch

from soco_d2.modeling.byol_loss import byol_loss
from soco_d2.modeling.soco.losses import masked_level_byol_loss


def test_masked_all_levels_loss_equals_loss_on_assigned_rows():
    torch.manual_seed(0)
    L, N, K, D = 4, 3, 5, 8
    pred, target = torch.randn(L, N, K, D), torch.randn(L, N, K, D)
    lp = torch.randint(0, L, (N, K))
    lt = torch.randint(0, L, (N, K))  # the two views may assign a box to different levels
    n_idx, k_idx = torch.meshgrid(torch.arange(N), torch.arange(K), indexing="ij")
    p_rows = pred[lp, n_idx, k_idx].reshape(N * K, D)
    t_rows = target[lt, n_idx, k_idx].reshape(N * K, D)
    expected = byol_loss(p_rows, t_rows, N)
    got = masked_level_byol_loss(pred, target, lp, lt)
    assert torch.isclose(got, expected, rtol=1e-5, atol=1e-5)
    # A row pooled at a wrong level must change the result: the mask really selects.
    pred2 = pred.clone()
    pred2[(lp[0, 0] + 1) % L, 0, 0] += 5.0
    assert torch.isclose(masked_level_byol_loss(pred2, target, lp, lt), got, atol=1e-6)
    pred2[lp[0, 0], 0, 0] = -pred2[lp[0, 0], 0, 0]
    assert not torch.isclose(masked_level_byol_loss(pred2, target, lp, lt), got, atol=1e-3)
