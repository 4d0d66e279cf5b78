"""UniGrad on a hand-computed case, and its single-process correlation path."""
import torch

from soco_d2.modeling.sim import correlation_spectrum, target_correlation, unigrad_loss


def test_hand_computed_loss_and_gradient():
    # targets layer-normalise (eps 0) to (1, -1) and (-1, 1): C = [[1, -1], [-1, 1]]
    target = torch.tensor([[3.0, 1.0], [0.0, 4.0]])
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    out = unigrad_loss(pred, target, neg_weight=0.02, eps=0.0)
    # pos = mean(1, 2) = 1.5; neg = mean(1, 4) = 2.5; loss = (1.5 + 0.05) / 2
    assert out["pos"].item() == 1.5 and out["neg"].item() == 2.5
    assert abs(out["loss"].item() - 0.775) < 1e-7
    out["loss"].backward()
    # d/dp_i = (2 (p_i - t_i) + 0.02 * 2 C p_i) / (N D)
    expected = torch.tensor([[0.01, 0.49], [0.48, 0.52]])
    torch.testing.assert_close(pred.grad, expected)


def test_single_process_correlation_is_the_local_one():
    t = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]])
    torch.testing.assert_close(target_correlation(t), t.T @ t / 3)


def test_no_gradient_reaches_the_target_and_half_inputs_run_in_float32():
    pred = torch.randn(2, 3, 8).half().requires_grad_()
    target = torch.randn(2, 3, 8, requires_grad=True)
    out = unigrad_loss(pred, target)
    assert out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert target.grad is None and pred.grad is not None



def test_correlation_spectrum_counts_directions():
    torch.manual_seed(0)
    # every token a scaled, shifted copy of one vector: one direction after layer norm
    one = torch.randn(1, 8) * torch.rand(50, 1) * 3 + torch.randn(50, 1)
    s = correlation_spectrum(one, eps=0.0)
    assert abs(s["top1"] - 1.0) < 1e-9 and abs(s["erank"] - 1.0) < 1e-6 and s["dim"] == 8
    # tokens +-(1, -1, 0, 0) and +-(0, 0, 1, -1), each layer-normalised to norm^2 = D = 4:
    # C = diag-blocks of two equal eigenvalues 2 -> shares (1/2, 1/2, 0, 0), erank 2
    a, b = torch.tensor([1.0, -1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, -1.0])
    s = correlation_spectrum(torch.stack([a, -a, b, -b]), eps=0.0)
    assert abs(s["top1"] - 0.5) < 1e-9 and abs(s["top3"] - 1.0) < 1e-9
    assert abs(s["erank"] - 2.0) < 1e-9
    # many random tokens spread over all D directions: top1 near (D - 1)^-1, erank near D - 1
    # (layer norm removes the all-ones direction)
    s = correlation_spectrum(torch.randn(20000, 16))
    assert s["top1"] < 0.1 and s["erank"] > 14.0
