"""SoCo meta-architecture: shapes through every stage, variants, outputs, input errors."""
import pytest
import torch
from detectron2.modeling import build_model

from _configs import tiny_soco_cfg
from _data import random_soco_batch


def _train_step(cfg, batch_size=2):
    model = build_model(cfg)
    model.train()
    losses = model(random_soco_batch(cfg, batch_size))
    sum(losses.values()).backward()
    return model, losses


def test_fpn_shapes_through_every_stage():
    cfg = tiny_soco_cfg()
    model = build_model(cfg).train()
    batch = random_soco_batch(cfg, batch_size=2)
    k = cfg.INPUT.SOCO.NUM_PROPOSALS
    for v, side in enumerate(cfg.INPUT.SSL.VIEW_SIZES):
        images = model.preprocess_view(batch, v)
        padded = -(-side // 32) * 32
        assert images.tensor.shape == (2, 3, padded, padded)
        assert images.image_sizes == [(side, side)] * 2
        feats = model.backbone(images.tensor)
        for lvl, name in enumerate(["p2", "p3", "p4", "p5"]):
            assert feats[name].shape == (2, 32, padded // 2 ** (lvl + 2), padded // 2 ** (lvl + 2))
        boxes = model.view_boxes(batch, v)
        levels = model.roi_heads.assign_levels(boxes)
        assert levels.shape == (2 * k,) and levels.max() <= 3
        h = model.roi_heads(feats, boxes, levels)
        assert h.shape == (2 * k, 64)
        z = model.projector(h)
        assert z.shape == (2 * k, 32) and model.predictor(z).shape == (2 * k, 32)
    # The 32 px view (boxes <= 32 px) never reaches p5 with ranges 16/24/40.
    assert model.roi_heads.assign_levels(model.view_boxes(batch, 2)).max() <= 2


def test_fpn_training_losses_and_gradients():
    cfg = tiny_soco_cfg()
    model, losses = _train_step(cfg)
    assert set(losses) == {"loss_v1_v2", "loss_v1_v3"}
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v) and 0 <= v.item() <= 8
    online = [p for n, p in model.named_parameters() if not n.startswith("target.")]
    assert all(p.grad is not None for p in online)
    assert all(p.grad is None for p in model.target.parameters())
    assert model.roi_heads.box_head.conv1.norm.__class__.__name__ == "SyncBatchNorm"


def test_target_batchnorm_keeps_its_own_running_stats():
    cfg = tiny_soco_cfg()
    model = build_model(cfg).train()
    bn = model.target["roi_heads"].box_head.conv1.norm
    before = bn.running_mean.clone()
    model(random_soco_batch(cfg))
    assert not torch.equal(before, bn.running_mean)


def test_soco_star_four_views_three_pairs():
    cfg = tiny_soco_cfg(view_sizes=(64, 64, 48, 32))
    _, losses = _train_step(cfg)
    assert set(losses) == {"loss_v1_v2", "loss_v1_v3", "loss_v1_v4"}


def test_c4_variant_pools_res4_and_uses_res5():
    cfg = tiny_soco_cfg("C4")
    model, losses = _train_step(cfg)
    assert set(losses) == {"loss_v1_v2"}
    assert hasattr(model.roi_heads, "res5") and not hasattr(model.roi_heads, "box_head")
    assert model.roi_heads.pooler.output_size == (14, 14)
    assert model.roi_heads.output_dim == 512
    assert model.projector.linear1.in_features == 512
    assert set(model.backbone.output_shape()) == {"res4"}


def test_zero_init_residual():
    model = build_model(tiny_soco_cfg("C4"))
    assert torch.all(model.backbone.res2[0].conv2.norm.weight == 0)
    assert torch.all(model.roi_heads.res5[0].conv3.norm.weight == 0)
    assert torch.all(model.backbone.res2[0].conv1.norm.weight == 1)


def test_eval_returns_per_view_box_embeddings():
    cfg = tiny_soco_cfg()
    model = build_model(cfg).eval()
    out = model(random_soco_batch(cfg, batch_size=3))
    assert len(out) == 3
    for r in out:
        assert [t.shape for t in r["box_features"]] == [(4, 64)] * 3
        assert [t.shape for t in r["embeddings"]] == [(4, 32)] * 3
    assert model.device == torch.device("cpu")
    assert model.pixel_mean.shape == (3, 1, 1) and "pixel_mean" not in model.state_dict()


def test_empty_fpn_level_still_gets_a_gradient():
    # All boxes on p2: p5's output conv must get a (zero) gradient, not None, so DDP does not
    # need find_unused_parameters.
    cfg = tiny_soco_cfg()
    cfg.MODEL.SOCO.LEVEL_RANGES = [1000, 2000, 3000]
    model, _ = _train_step(cfg)
    assert model.backbone.fpn_output5.weight.grad is not None


def test_bad_inputs_raise_clear_errors():
    cfg = tiny_soco_cfg()
    model = build_model(cfg).train()
    batch = random_soco_batch(cfg)
    with pytest.raises(KeyError, match="boxes"):
        model([{"views": batch[0]["views"]}])
    bad = random_soco_batch(cfg)
    bad[1]["boxes"][2] = bad[1]["boxes"][2][:3]
    with pytest.raises(ValueError, match="same"):
        model(bad)
    two_views = [dict(x, views=x["views"][:2], boxes=x["boxes"][:2]) for x in batch]
    with pytest.raises(ValueError, match="PAIRS"):
        model(two_views)
    cfg.MODEL.SOCO.ASSIGNMENT = "nearest"
    with pytest.raises(ValueError, match="ASSIGNMENT"):
        build_model(cfg)
