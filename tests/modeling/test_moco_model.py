"""MoCoV2 meta-architecture: the loss and queue against a hand-written step, shuffle-BN keys,
build-time errors, and backbone keys that load into a detectron2 detector."""
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

import soco_d2  # noqa: F401  (registers MoCoV2)
from soco_d2.engine import load_cfg
from soco_d2.modeling.contrastive import info_nce_loss
from soco_d2.modeling.shuffle_bn import SplitBatchNorm
from _configs import tiny_detector_cfg
from _paths import CONFIGS

TINY = os.path.join(CONFIGS, "pretrain/mocov2_R18_tiny.yaml")


def _model(*opts):
    cfg = load_cfg(TINY, ["INPUT.SSL.VIEW_SIZES", "[32, 32]", *opts], register=False)
    torch.manual_seed(0)
    return build_model(cfg).train()


def _batch(n=4, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {"views": [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
                   for _ in range(2)]}
        for _ in range(n)
    ]


def _embed(model, branch, images):
    pooled = branch["backbone"](images)["res5"].mean(dim=(2, 3))
    return F.normalize(branch["head"](pooled), dim=1)


def test_loss_and_enqueue_match_a_hand_written_step_without_shuffle():
    model = _model("MODEL.MOCO.SHUFFLE_BN", "False", "MODEL.MOCO.SPLIT_BN", "0")
    batch = _batch()
    queue0 = model.queue.queue.clone()
    with torch.no_grad():
        q = _embed(model, model._online_container(), model.preprocess_view(batch, 0))
        k = _embed(model, model.target, model.preprocess_view(batch, 1))
    expected = info_nce_loss(q, k, queue0, 0.2)
    losses = model(batch)
    assert set(losses) == {"loss_moco"}
    torch.testing.assert_close(losses["loss_moco"], expected, rtol=1e-5, atol=1e-6)
    # the step's keys went into the ring at the old pointer, after the logits were built
    assert int(model.queue.queue_ptr) == 4
    torch.testing.assert_close(model.queue.queue[:, :4], k.t(), rtol=1e-5, atol=1e-6)
    assert torch.equal(model.queue.queue[:, 4:], queue0[:, 4:])
    # gradients reach the online encoder only
    losses["loss_moco"].backward()
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    assert model.head.linear2.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target.parameters())


def test_shuffled_keys_use_split_bn_of_the_shuffled_batch_and_come_back_in_order():
    model = _model("MODEL.MOCO.SPLIT_BN", "2")
    assert model.shuffle_bn
    batch = _batch()
    im_k = model.preprocess_view(batch, 1)
    torch.manual_seed(7)
    keys = model._keys(im_k)
    torch.manual_seed(7)
    perm = torch.randperm(4)  # the permutation batch_shuffle draws from the same RNG state
    with torch.no_grad():
        by_hand = _embed(model, model.target, im_k[perm])[torch.argsort(perm)]
        unshuffled = _embed(model, model.target, im_k)
    torch.testing.assert_close(keys, by_hand)
    assert not torch.equal(perm, torch.arange(4))
    # with 2 splits, which images share BN statistics changes the keys: the shuffle matters
    assert not torch.allclose(keys, unshuffled, atol=1e-4)


def test_split_bn_is_in_query_and_key_encoders():
    model = _model("MODEL.MOCO.SPLIT_BN", "2")
    for net in (model.backbone, model.target["backbone"]):
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(bns) == 20 and all(type(m) is SplitBatchNorm and m.num_splits == 2
                                      for m in bns)
    plain = _model("MODEL.MOCO.SPLIT_BN", "0")
    assert not any(isinstance(m, SplitBatchNorm) for m in plain.modules())
    assert plain.state_dict().keys() == model.state_dict().keys()


def test_build_time_errors_name_the_keys():
    with pytest.raises(ValueError, match=r"MODEL\.MOCO\.QUEUE_SIZE \(64\).*SOLVER\.IMS_PER_BATCH"):
        _model("SOLVER.IMS_PER_BATCH", "6", "MODEL.MOCO.SPLIT_BN", "0")
    with pytest.raises(ValueError, match=r"MODEL\.MOCO\.SPLIT_BN \(8\).*SOLVER\.IMS_PER_BATCH"):
        _model("MODEL.MOCO.SPLIT_BN", "8")
    # a norm that is not plain BN would not be split: an error, not a silent no-op
    with pytest.raises(ValueError, match=r"SPLIT_BN.*MODEL\.RESNETS\.NORM 'BN' \(got 'SyncBN'\)"):
        _model("MODEL.RESNETS.NORM", "SyncBN")
    with pytest.raises(ValueError, match="MODEL.MOCO.IN_FEATURE"):
        _model("MODEL.MOCO.IN_FEATURE", "res4")
    model = _model()
    with pytest.raises(ValueError, match="2 views"):
        model([{"views": [torch.zeros(3, 32, 32, dtype=torch.uint8)]}] * 4)


def test_target_is_an_ema_copy_of_backbone_and_head_only():
    model = _model()
    assert set(model.target.keys()) == {"backbone", "head"}
    for (n, p), (_, t) in zip(model.backbone.named_parameters(),
                              model.target["backbone"].named_parameters()):
        assert torch.equal(p, t) and not t.requires_grad, n
    with torch.no_grad():
        model.head.linear2.weight.add_(1.0)
    before = model.target["head"].linear2.weight.clone()
    model.update_target(0.999)
    torch.testing.assert_close(model.target["head"].linear2.weight, before + 0.001)
    assert model.target_momentum(10, 20) == 0.999  # constant schedule


def test_floor_is_a_scalar_over_the_online_backbone():
    model = _model()
    out = model.floor(_batch())
    assert out.dim() == 0
    out.backward()
    assert model.backbone.res5[-1].conv2.weight.grad is not None
    assert model.head.linear1.weight.grad is None


def test_inference_returns_features_and_unit_embeddings():
    model = _model().eval()
    out = model(_batch(n=3))
    assert len(out) == 3 and len(out[0]["features"]) == 2
    assert out[0]["features"][0].shape == (512,) and out[0]["embeddings"][1].shape == (128,)
    torch.testing.assert_close(out[2]["embeddings"][0].norm(), torch.tensor(1.0))


def test_backbone_keys_are_detectron2_resnet_keys_of_a_detector():
    detector = build_model(tiny_detector_cfg("fpn", 18)).state_dict()
    ours = _model().state_dict()
    bottom_up = {k: v for k, v in detector.items() if k.startswith("backbone.bottom_up.")}
    assert bottom_up
    for k, v in bottom_up.items():
        twin = "backbone." + k[len("backbone.bottom_up."):]
        assert twin in ours, twin
        assert ours[twin].shape == v.shape, twin
    # and nothing of ours under backbone. is foreign to the detector's ResNet
    assert {k for k in ours if k.startswith("backbone.")} == {
        "backbone." + k[len("backbone.bottom_up."):] for k in bottom_up
    }


def test_exclude_same_image_leaves_each_querys_earlier_keys_out_of_its_negatives():
    model = _model("MODEL.MOCO.SHUFFLE_BN", "False", "MODEL.MOCO.SPLIT_BN", "0",
                   "MODEL.MOCO.EXCLUDE_SAME_IMAGE", "True")
    batch = [dict(x, image_id=f"img{i}.jpg") for i, x in enumerate(_batch())]
    model(batch)  # step 1: the four images' keys enter the ring, with their ids
    ring, ids = model.queue.queue.clone(), model.queue.ids.clone()
    assert int((ids >= 0).sum()) == 4
    with torch.no_grad():
        q = _embed(model, model._online_container(), model.preprocess_view(batch, 0))
        k = _embed(model, model.target, model.preprocess_view(batch, 1))
    own = model.queue.batch_ids(batch)
    rows = [info_nce_loss(q[i:i + 1], k[i:i + 1], ring[:, ids != own[i]], 0.2) for i in range(4)]
    loss = model(batch)["loss_moco"]  # step 2: the same images again
    torch.testing.assert_close(loss, torch.stack(rows).mean(), rtol=1e-5, atol=1e-6)
    # without the key, each query's own earlier key counts as a negative
    assert not torch.allclose(loss, info_nce_loss(q, k, ring, 0.2), rtol=1e-4)
    assert "ids" not in dict(_model().queue.named_buffers())  # off: checkpoints as before
