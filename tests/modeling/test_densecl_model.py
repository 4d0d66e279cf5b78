"""The DenseCL meta-architecture on the tiny config: queues, dense loss, warm-up, floor, keys."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import soco_d2  # noqa: F401  (registers DenseCL)
from soco_d2.engine import load_cfg
from soco_d2.modeling.meta_arch import DenseCL
from _configs import tiny_detector_cfg
from _paths import CONFIGS

TINY = os.path.join(CONFIGS, "pretrain/densecl_R18_tiny.yaml")


def _model(*opts):
    cfg = load_cfg(TINY, list(opts), register=False)
    model = build_model(cfg)
    model.train()
    return model


def _batch(n=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {"views": [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
                   for _ in range(2)]}
        for _ in range(n)
    ]


def _encode(branch, images):
    """Reference encoder written out: res5, global emb, dense grid (normalised), pooled."""
    feats = branch["backbone"](images)["res5"]
    emb = F.normalize(branch["head"](feats.mean(dim=(2, 3))), dim=1)
    dense = branch["dense_head"].conv2(torch.relu(branch["dense_head"].conv1(feats)))
    grid = dense.flatten(2)
    return feats, emb, F.normalize(grid, dim=1), F.normalize(grid.mean(dim=2), dim=1)


def test_model_parts_and_config():
    model = _model()
    assert isinstance(model, DenseCL)
    assert set(model.online_parts()) == {"backbone", "head", "dense_head"}
    assert set(model.target.keys()) == {"backbone", "head", "dense_head"}
    assert model.queue2.queue.shape == (128, 64) and model.queue.queue.shape == (128, 64)
    assert model.loss_weight == 0.5 and model.warmup_iters == 0
    # official init of the global head's Linear layers: zero biases
    assert torch.count_nonzero(model.head.linear1.bias) == 0
    assert model.dense_head.conv1.in_channels == 512 and model.dense_head.conv2.out_channels == 128


def test_losses_and_queues_match_a_written_out_computation():
    torch.manual_seed(0)
    model = _model("MODEL.MOCO.SHUFFLE_BN", "False")
    batch = _batch()
    queue, queue2 = model.queue.queue.clone(), model.queue2.queue.clone()
    out = model(batch)
    assert set(out) == {"loss_global", "loss_dense"}

    with torch.no_grad():  # train-mode BN: batch statistics, so the recomputation is exact
        im_q = model.preprocess_view(batch, 0)
        im_k = model.preprocess_view(batch, 1)
        qf, q, q_grid, _ = _encode(model._online_container(), im_q)
        kf, k, k_grid, k_pooled = _encode(model.target, im_k)
    t = 0.2
    # global: MoCo v2's InfoNCE, weight 1 - 0.5
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], 1) / t
    expected_global = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(out["loss_global"], 0.5 * expected_global)
    # dense: per query cell, positive = key dense vector at the cell with the most similar
    # *backbone* feature; negatives = queue2
    terms = []
    for b in range(4):
        qb = F.normalize(qf[b].flatten(1), dim=0)
        kb = F.normalize(kf[b].flatten(1), dim=0)
        for i in range(qb.shape[1]):
            j = int((qb[:, i:i + 1] * kb).sum(0).argmax())
            pos = q_grid[b, :, i] @ k_grid[b, :, j]
            neg = q_grid[b, :, i] @ queue2
            terms.append(torch.logsumexp(torch.cat([pos.view(1), neg]) / t, 0) - pos / t)
    torch.testing.assert_close(out["loss_dense"], 0.5 * torch.stack(terms).mean())
    # queues: global keys; dense keys pooled over cells THEN normalised
    assert int(model.queue.queue_ptr) == 4 and int(model.queue2.queue_ptr) == 4
    torch.testing.assert_close(model.queue.queue[:, :4], k.t())
    torch.testing.assert_close(model.queue2.queue[:, :4], k_pooled.t())
    assert not torch.allclose(model.queue2.queue[:, :4], F.normalize(k_grid.mean(2), dim=1).t(),
                              atol=1e-4)
    assert torch.equal(model.queue2.queue[:, 4:], queue2[:, 4:])


def test_warmup_zeroes_the_dense_term_then_enables_it():
    model = _model("MODEL.DENSECL.WARMUP_ITERS", "3")
    later = copy.deepcopy(model)
    batch = _batch()
    torch.manual_seed(1)  # the same key shuffle in both steps
    with EventStorage(2) as s_warm:
        warm = model(batch)
    torch.manual_seed(1)
    with EventStorage(3) as s_on:
        on = later(batch)
    assert warm["loss_dense"].item() == 0.0
    assert s_warm.latest()["densecl/loss_weight"][0] == 0.0
    assert s_on.latest()["densecl/loss_weight"][0] == 0.5
    # same model, batch and queues: the global term has weight 1 in warm-up, 0.5 after
    torch.testing.assert_close(warm["loss_global"], 2 * on["loss_global"])
    dense_raw = s_warm.latest()["densecl/dense_infonce"][0]
    assert on["loss_dense"].item() == pytest.approx(0.5 * dense_raw, rel=1e-5)
    # queue2 is filled during the warm-up too (the official hook only changes the weight)
    assert int(model.queue2.queue_ptr) == 4
    # the dense head still gets a (zero) gradient in warm-up: no unused parameters for DDP
    sum(warm.values()).backward()
    assert model.dense_head.conv1.weight.grad is not None
    assert torch.count_nonzero(model.dense_head.conv1.weight.grad) == 0
    with pytest.raises(RuntimeError, match="WARMUP_ITERS"):
        model(batch)  # outside any EventStorage the iteration is unknown


def test_gradients_and_target_ema():
    model = _model()
    out = model(_batch())
    sum(out.values()).backward()
    for name in ("backbone.res5.1.conv2.weight", "head.linear2.weight", "dense_head.conv2.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.target.parameters())
    online = model.dense_head.conv1.weight.detach().clone()
    with torch.no_grad():
        model.dense_head.conv1.weight.add_(1.0)
    before = model.target["dense_head"].conv1.weight.clone()
    model.update_target(model.target_momentum(0, 10))  # constant 0.999
    torch.testing.assert_close(
        model.target["dense_head"].conv1.weight, 0.999 * before + 0.001 * (online + 1.0)
    )


def test_floor_is_a_scalar_over_both_backbone_passes():
    model = _model()
    f = model.floor(_batch())
    assert f.dim() == 0
    f.backward()
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    assert model.dense_head.conv1.weight.grad is None  # heads are not part of the floor


def test_bad_config_values_fail_clearly():
    with pytest.raises(ValueError, match="MODEL.DENSECL.LOSS_WEIGHT"):
        _model("MODEL.DENSECL.LOSS_WEIGHT", "1.5")
    with pytest.raises(ValueError, match="MODEL.MOCO.QUEUE_SIZE"):
        _model("MODEL.MOCO.QUEUE_SIZE", "66")


def test_backbone_keys_are_detectron2_resnet_keys():
    state = _model().state_dict()
    detector = build_model(tiny_detector_cfg("fpn", 18)).state_dict()
    keys = [k for k in detector if k.startswith("backbone.bottom_up.")]
    assert len(keys) > 100
    for k in keys:
        twin = "backbone." + k[len("backbone.bottom_up."):]
        assert twin in state, twin
        assert state[twin].shape == detector[k].shape, twin
    # heads and queues live under other names, so a "backbone." prefix filter drops them
    assert {"queue2.queue", "queue2.queue_ptr", "dense_head.conv1.weight"} <= set(state)
    assert not any(k.startswith("backbone.") and "dense" in k for k in state)


def test_exclude_same_image_reaches_both_queues_one_id_per_query_cell():
    from soco_d2.modeling.contrastive import info_nce_loss
    from soco_d2.modeling.densecl import dense_correspondence, dense_info_nce

    torch.manual_seed(0)
    model = _model("MODEL.MOCO.SHUFFLE_BN", "False", "MODEL.MOCO.EXCLUDE_SAME_IMAGE", "True")
    batch = [dict(x, image_id=f"img{i}.jpg") for i, x in enumerate(_batch())]
    model(batch)  # the four images' keys enter both queues with their ids
    assert torch.equal(model.queue.ids, model.queue2.ids)
    assert int((model.queue2.ids >= 0).sum()) == 4
    queue, queue2, ids = model.queue.queue.clone(), model.queue2.queue.clone(), model.queue.ids
    with torch.no_grad():
        qf, q, q_grid, _ = _encode(model._online_container(), model.preprocess_view(batch, 0))
        kf, k, k_grid, _ = _encode(model.target, model.preprocess_view(batch, 1))
    own = model.queue.batch_ids(batch)
    cells = q_grid.shape[2]
    cell_ids = torch.tensor([int(own[b]) for b in range(4) for _ in range(cells)])  # image-major
    match = dense_correspondence(qf, kf)
    expected_dense = dense_info_nce(q_grid, k_grid, match, queue2, 0.2, (cell_ids, ids.clone()))
    expected_global = torch.stack(
        [info_nce_loss(q[i:i + 1], k[i:i + 1], queue[:, ids != own[i]], 0.2) for i in range(4)]
    ).mean()
    out = model(batch)  # the same images again
    torch.testing.assert_close(out["loss_dense"], 0.5 * expected_dense)
    torch.testing.assert_close(out["loss_global"], 0.5 * expected_global)
    kept = dense_info_nce(q_grid, k_grid, match, queue2, 0.2)  # own keys as negatives
    assert not torch.allclose(out["loss_dense"], 0.5 * kept, rtol=1e-4)
