"""SIM's UniGrad over two gloo processes: the target correlation is all-reduced, and the
averaged per-rank step equals the one-process step on the whole batch."""
import pytest
import torch

from soco_d2.modeling.sim import target_correlation, unigrad_loss
from _distributed import run_distributed

pytestmark = pytest.mark.spawns

# One global batch of 2 x 3 tokens split over 2 ranks; rank 1's targets far from rank 0's, so a
# per-rank correlation would differ from the global one.
_PRED = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(3))
_TARGET = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(4))
_TARGET[2:] = _TARGET[2:] * 3 + 2


def _unigrad_rank(rank):
    pred = _PRED[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
    target = _TARGET[2 * rank : 2 * rank + 2]
    t = torch.nn.functional.layer_norm(target.reshape(-1, 8), (8,), eps=1e-5)
    out = unigrad_loss(pred, target)
    out["loss"].backward()
    return dict(corr=target_correlation(t), loss=out["loss"].detach(), grad=pred.grad)


def test_two_processes_share_the_correlation_and_match_one_process():
    ranks = run_distributed(_unigrad_rank, world_size=2, timeout=90)
    # the whole batch in one process
    pred = _PRED.clone().requires_grad_(True)
    full = unigrad_loss(pred, _TARGET)
    full["loss"].backward()
    t = torch.nn.functional.layer_norm(_TARGET.reshape(-1, 8), (8,), eps=1e-5)
    local = target_correlation(t[:6])
    assert not torch.allclose(local, target_correlation(t), atol=1e-2)  # the split matters
    for r in ranks:  # every rank holds the all-reduced (global) correlation
        torch.testing.assert_close(r["corr"], target_correlation(t), rtol=1e-5, atol=1e-6)
    # DDP averages losses and gradients over ranks: the mean equals the one-process step
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full["loss"])
    grads = torch.cat([r["grad"] for r in ranks]) / 2
    torch.testing.assert_close(grads, pred.grad, rtol=1e-5, atol=1e-7)
