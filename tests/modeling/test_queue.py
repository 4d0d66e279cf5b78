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


def test_tracked_ids_follow_their_keys_through_the_ring_and_checkpoints():
    from soco_d2.modeling.queue import NO_IMAGE

    q = KeyQueue(3, 4, track_ids=True)
    assert set(dict(q.named_buffers())) == {"queue", "queue_ptr", "ids"}
    assert torch.equal(q.ids, torch.full((4,), NO_IMAGE))
    q.enqueue(_keys(1, 2), torch.tensor([5, 6]))
    q.enqueue(_keys(3, 2), torch.tensor([7, 8]))
    q.enqueue(_keys(5, 2), torch.tensor([9, 5]))  # wraps: overwrites the keys of 5 and 6
    assert torch.equal(q.ids, torch.tensor([9, 5, 7, 8]))
    query_ids, queue_ids = q.exclusion(torch.tensor([5, 8]), repeat=2)
    assert query_ids.tolist() == [5, 5, 8, 8] and torch.equal(queue_ids, q.ids)
    queue_ids[0] = 0  # a copy: the ring's ids do not change
    assert int(q.ids[0]) == 9
    b = KeyQueue(3, 4, track_ids=True)
    b.load_state_dict(q.state_dict())
    assert torch.equal(b.ids, q.ids)
    with pytest.raises(ValueError, match="image ids"):
        q.enqueue(_keys(0, 2))  # keys without their ids
    assert q.exclusion(None) is None
    with pytest.raises(ValueError, match="records no image ids"):
        KeyQueue(3, 4).exclusion(torch.tensor([1]))


def test_image_ids_are_stable_distinct_and_non_negative():
    from soco_d2.modeling.queue import image_ids

    batch = [{"image_id": "a.jpg"}, {"image_id": 3}, {"file_name": "/data/b.jpg"}]
    ids = image_ids(batch)
    assert ids.dtype == torch.long and len(set(ids.tolist())) == 3 and (ids >= 0).all()
    # the same image gives the same id in another call (another process, another run); the
    # file name decides when both are given
    assert torch.equal(image_ids([{"image_id": "a.jpg"}]), ids[:1])
    assert torch.equal(image_ids([{"image_id": 0, "file_name": "/data/b.jpg"}]), ids[2:])
    assert KeyQueue(3, 4).batch_ids(batch) is None
    assert torch.equal(KeyQueue(3, 4, track_ids=True).batch_ids(batch), ids)
    with pytest.raises(ValueError, match="file_name"):
        image_ids([{}])
