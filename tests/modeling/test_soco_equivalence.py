"""Pooling each box once at its level gives the official (every level, masked) loss.

The two formulations differ only in which boxes share a batch-norm call after pooling: the
official code runs head, projector and predictor once per level over ALL boxes, this one once
per view over each box at its own level. Hence they are exactly equal whenever everything after
the pooler is a per-box function:
- with the post-pooling norms using running statistics (BN in eval mode), or
- in training mode with no norm in the box head and MLPs (backbone/FPN BN see the same images
  in both formulations, so their batch statistics agree).
With train-mode BN in the head/MLPs the losses differ by the batch statistics only (not
asserted).
"""
import torch
from detectron2.modeling import build_model
from torch.nn.modules.batchnorm import _BatchNorm

from _configs import tiny_soco_cfg
from _data import random_soco_batch


def _pair(cfg):
    cfg.MODEL.SOCO.ASSIGNMENT = "level"
    level = build_model(cfg)
    cfg = cfg.clone()
    cfg.MODEL.SOCO.ASSIGNMENT = "all_levels"
    official = build_model(cfg)
    official.load_state_dict(level.state_dict())
    return level.train(), official.train()


def test_equal_with_running_stat_batchnorm():
    level, official = _pair(tiny_soco_cfg())
    with torch.no_grad():  # non-trivial running statistics and affine weights
        for m in level.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    official.load_state_dict(level.state_dict())
    for model in (level, official):
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
    batch = random_soco_batch(tiny_soco_cfg(), batch_size=2, seed=3)
    a, b = level(batch), official(batch)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-5), (k, a[k], b[k])


def test_equal_losses_and_gradients_in_training_without_head_norms():
    cfg = tiny_soco_cfg(norm="BN")
    cfg.MODEL.ROI_BOX_HEAD.NORM = ""
    cfg.MODEL.SSL.MLP_NORM = ""
    level, official = _pair(cfg)
    batch = random_soco_batch(cfg, batch_size=2, seed=1)
    levels = torch.cat(
        [level.roi_heads.assign_levels(level.view_boxes(batch, v)) for v in range(3)])
    assert len(levels.unique()) >= 3  # the check covers several levels
    a, b = level(batch), official(batch)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), (k, a[k], b[k])
    sum(a.values()).backward()
    sum(b.values()).backward()
    pb = dict(official.named_parameters())
    for name, p in level.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, pb[name].grad, rtol=1e-4, atol=1e-6), name
