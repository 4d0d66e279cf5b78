"""InfoNCE logits/loss on a hand-computed case, and the single-process gather."""
import math

import pytest
import torch

from soco_d2.modeling.comm import concat_all_gather
from soco_d2.modeling.contrastive import info_nce_logits, info_nce_loss


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


@pytest.mark.parametrize("block_elements", [5, 1 << 20])  # a queue column per block; one block
def test_blocked_loss_matches_cross_entropy_of_the_logits(monkeypatch, block_elements):
    import torch.nn.functional as F

    from soco_d2.modeling import contrastive

    monkeypatch.setattr(contrastive, "_BLOCK_ELEMENTS", block_elements)
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=0)
    inputs = [t.clone().requires_grad_(True) for t in (q, k, queue)]
    ref = [t.clone().requires_grad_(True) for t in (q, k, queue)]
    loss = info_nce_loss(*inputs, 0.2)
    logits, labels = info_nce_logits(*ref, 0.2)
    expected = F.cross_entropy(logits, labels)
    assert loss.dtype == torch.float64  # half precision is raised to float32, float64 kept
    torch.testing.assert_close(loss, expected)
    (loss * 3).backward()
    (expected * 3).backward()
    for got, want in zip(inputs, ref):  # q, k and (when it asks for one) the queue
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-6)
    # float64 gradients of the blocked function itself, by finite differences
    torch.autograd.gradcheck(
        lambda a, b, c: contrastive._QueueInfoNCE.apply(a, b, c, 0.2),
        [t.detach().clone().requires_grad_(True) for t in (q, k, queue)],
    )


def test_blocked_loss_is_stable_for_large_logits(monkeypatch):
    import torch.nn.functional as F

    from soco_d2.modeling import contrastive

    monkeypatch.setattr(contrastive, "_BLOCK_ELEMENTS", 6)  # 2 columns per block
    g = torch.Generator().manual_seed(1)
    # logits up to ~600 / 0.05: exp overflows float32 unless every block is shifted by its max
    q = (torch.randn(3, 4, generator=g) * 30).requires_grad_(True)
    k = torch.randn(3, 4, generator=g)
    queue = torch.randn(4, 7, generator=g)
    loss = info_nce_loss(q, k, queue, 0.05)
    q_ref = q.detach().double().requires_grad_(True)
    logits, labels = info_nce_logits(q_ref, k.double(), queue.double(), 0.05)
    expected = F.cross_entropy(logits, labels)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-3)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(q.grad.double(), q_ref.grad, rtol=1e-4, atol=1e-5)


def test_loss_on_the_ring_itself_is_unaffected_by_an_enqueue_before_backward():
    import torch.nn.functional as F

    from soco_d2.modeling.queue import KeyQueue

    queue = KeyQueue(4, 6)
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(3, 4, generator=g), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    q_ref = q.detach().clone().requires_grad_(True)
    expected = info_nce_loss(q_ref, k, queue.clone_keys(), 0.2)
    loss = info_nce_loss(q, k, queue.keys_view(), 0.2)
    queue.enqueue(k)  # the step's in-place write, before backward
    loss.backward()
    expected.backward()
    assert torch.equal(loss, expected)
    torch.testing.assert_close(q.grad, q_ref.grad)


def _rowwise_reference(q, k, queue, t, query_ids, queue_ids):
    """Mean over rows of InfoNCE with each row's same-image columns deleted from the queue."""
    import torch.nn.functional as F

    rows = []
    for i in range(q.shape[0]):
        keep = queue_ids != query_ids[i]
        logits, labels = info_nce_logits(q[i : i + 1], k[i : i + 1], queue[:, keep], t)
        rows.append(F.cross_entropy(logits, labels))
    return torch.stack(rows).mean()


@pytest.mark.parametrize("block_elements", [1, 7, 1 << 20])  # a column per block; a few; one
def test_same_image_keys_are_left_out_of_each_querys_negatives(monkeypatch, block_elements):
    import torch.nn.functional as F

    from soco_d2.modeling import contrastive

    monkeypatch.setattr(contrastive, "_BLOCK_ELEMENTS", block_elements)
    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(3, 6, generator=g, dtype=torch.float64), dim=0)
    query_ids = torch.tensor([10, 11, 12, 13])
    # row 0 loses columns 2 and 4, row 1 column 3, row 2 none, row 3 columns 0, 1 and 5 (with a
    # column per block, its first two blocks are left out entirely)
    queue_ids = torch.tensor([13, 13, 10, 11, 10, 13])
    inputs = [t.clone().requires_grad_(True) for t in (q, k, queue)]
    loss = info_nce_loss(*inputs, 0.2, (query_ids, queue_ids))
    ref_inputs = [t.clone().requires_grad_(True) for t in (q, k, queue)]
    expected = _rowwise_reference(*ref_inputs, 0.2, query_ids, queue_ids)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, info_nce_loss(q, k, queue, 0.2))  # something was left out
    loss.backward()
    expected.backward()
    for got, want in zip(inputs, ref_inputs):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-6, atol=1e-9)
    # the materialised logits put -inf exactly on the left-out columns
    logits, _ = info_nce_logits(q, k, queue, 0.2, (query_ids, queue_ids))
    same = query_ids[:, None] == queue_ids[None, :]
    assert torch.isinf(logits[:, 1:][same]).all() and torch.isfinite(logits[:, 1:][~same]).all()
    torch.autograd.gradcheck(
        lambda a, b, c: contrastive._QueueInfoNCE.apply(a, b, c, 0.2, query_ids, queue_ids),
        [t.detach().clone().requires_grad_(True) for t in (q, k, queue)],
    )


def test_a_query_whose_every_queue_key_is_its_own_image_has_zero_loss():
    q, k, queue = _case()
    q.requires_grad_(True)
    loss = info_nce_loss(q[:1], k[:1], queue, 0.5, (torch.tensor([7]), torch.tensor([7, 7, 7])))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(q.grad).all()


def test_ids_of_the_wrong_shapes_are_clear_errors():
    q, k, queue = _case()
    with pytest.raises(ValueError, match="query_ids"):
        info_nce_loss(q, k, queue, 0.2, (torch.tensor([0]), torch.tensor([0, 1, 2])))
    with pytest.raises(ValueError, match="queue_ids"):
        info_nce_logits(q, k, queue, 0.2, (torch.tensor([0, 1]), torch.tensor([0, 1])))
