"""KeyQueue: ring writes, wrap-around, the pointer in checkpoints, and batch checks."""
import pytest
import torch

from soco_d2.modeling.queue import KeyQueue


def _keys(start: int, b: int, dim: int = 3) -> torch.Tensor:
    """(b, dim) keys whose rows are distinguishable: row i is filled with start + i."""
    return torch.arange(start, start + b, dtype=torch.float32)[:, None].expand(b, dim).clone()


def test_init_is_unit_columns_and_pointer_zero():
    q = KeyQueue(4, 10)
    assert q.queue.shape == (4, 10) and q.queue_ptr.dtype == torch.long
    torch.testing.assert_close(q.queue.norm(dim=0), torch.ones(10))
    assert int(q.queue_ptr) == 0
    assert set(dict(q.named_buffers())) == {"queue", "queue_ptr"}


def test_enqueue_writes_columns_in_order_and_wraps_around():
    q = KeyQueue(3, 6)
    initial = q.queue.clone()
    q.enqueue(_keys(1, 2))
    assert int(q.queue_ptr) == 2
    assert torch.equal(q.queue[:, :2], _keys(1, 2).t())
    assert torch.equal(q.queue[:, 2:], initial[:, 2:])  # untouched
    q.enqueue(_keys(3, 2))
    q.enqueue(_keys(5, 2))
    assert int(q.queue_ptr) == 0  # (4 + 2) % 6: wrapped
    assert torch.equal(q.queue, _keys(1, 6).t())
    q.enqueue(_keys(7, 2))  # overwrites the oldest two
    assert int(q.queue_ptr) == 2
    assert torch.equal(q.queue[0], torch.tensor([7.0, 8, 3, 4, 5, 6]))


def test_clone_keys_is_not_aliased_by_a_later_enqueue():
    q = KeyQueue(3, 4)
    snapshot = q.clone_keys()
    before = snapshot.clone()
    q.enqueue(_keys(10, 2))
    assert torch.equal(snapshot, before)
    assert not snapshot.requires_grad


def test_resume_from_state_dict_continues_the_ring_exactly():
    a = KeyQueue(3, 6)
    a.enqueue(_keys(1, 2))
    a.enqueue(_keys(3, 2))
    b = KeyQueue(3, 6)  # a fresh process: different random init, pointer 0
    b.load_state_dict(a.state_dict())
    assert int(b.queue_ptr) == 4
    for q in (a, b):
        q.enqueue(_keys(5, 2))
        q.enqueue(_keys(7, 2))
    assert torch.equal(a.queue, b.queue) and int(b.queue_ptr) == 2
    assert torch.equal(b.queue[0], torch.tensor([7.0, 8, 3, 4, 5, 6]))


def test_batch_that_does_not_divide_the_size_is_a_clear_error():
    q = KeyQueue(3, 6)
    q.check_batch(3)
    with pytest.raises(ValueError, match=r"MODEL\.MOCO\.QUEUE_SIZE.*SOLVER\.IMS_PER_BATCH"):
        q.check_batch(4, "MODEL.MOCO.QUEUE_SIZE")
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH"):
        q.enqueue(_keys(0, 4))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        q.enqueue(torch.zeros(2, 5))
    assert int(q.queue_ptr) == 0  # nothing written
