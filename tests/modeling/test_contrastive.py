"""InfoNCE logits/loss on a hand-computed case, and the single-process gather."""
import math

import pytest
import torch

from soco_d2.modeling.contrastive import concat_all_gather, info_nce_logits, info_nce_loss


def _case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # columns (1,0), (0,1), (-1,0)
    return q, k, queue


def test_logits_are_positive_then_queue_over_temperature():
    q, k, queue = _case()
    logits, labels = info_nce_logits(q, k, queue, 0.5)
    # row 0: q.k = 0.6, q.queue = (1, 0, -1); row 1: q.k = 1, q.queue = (0, 1, 0); all / 0.5
    expected = torch.tensor([[1.2, 2.0, 0.0, -2.0], [2.0, 0.0, 2.0, 0.0]])
    torch.testing.assert_close(logits, expected)
    assert labels.dtype == torch.long and torch.equal(labels, torch.zeros(2, dtype=torch.long))


def test_loss_is_cross_entropy_with_label_zero():
    q, k, queue = _case()
    loss = info_nce_loss(q, k, queue, 0.5)
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(2.0) + 1.0 + math.exp(-2.0))
    row1 = -2.0 + math.log(2 * math.exp(2.0) + 2.0)
    assert loss.dim() == 0
    assert abs(loss.item() - (row0 + row1) / 2) < 1e-6


def test_gradient_reaches_queries_and_keys_not_the_queue():
    q, k, queue = _case()
    q.requires_grad_(True)
    k.requires_grad_(True)
    info_nce_loss(q, k, queue, 0.2).backward()
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0
    assert queue.grad is None


def test_bad_inputs_are_clear_errors():
    q, k, queue = _case()
    with pytest.raises(ValueError, match="temperature"):
        info_nce_logits(q, k, queue, 0.0)
    with pytest.raises(ValueError, match="queue_keys"):
        info_nce_logits(q, k, queue.t(), 0.2)


def test_gather_is_identity_in_one_process():
    t = torch.randn(3, 2)
    out = concat_all_gather(t)
    assert torch.equal(out, t)
