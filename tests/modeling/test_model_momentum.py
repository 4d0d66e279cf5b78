"""EMA target: cosine schedule, exact (1 - m) update, parameters only, saved in checkpoints."""
import math

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from soco_d2.modeling.momentum import build_momentum_target, cosine_momentum, ema_update_
from _configs import tiny_soco_cfg
from _data import random_soco_batch


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
    expected = 1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2
    assert cosine_momentum(0.99, 25, 100) == pytest.approx(expected)
    values = [cosine_momentum(0.99, i, 10) for i in range(11)]
    assert all(a < b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        cosine_momentum(0.99, 0, 0)


def test_ema_moves_parameters_by_exactly_one_minus_m_and_leaves_buffers():
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    target = build_momentum_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.fill_(7.0)
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for t, t0, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t - t0, 0.1 * (o - t0), atol=1e-6)
    assert torch.all(target[1].running_mean == 0)  # buffers are not EMA'd (official code)
    with pytest.raises(ValueError):
        ema_update_(target, online, 1.5)


def test_soco_update_target_and_checkpoint_round_trip():
    cfg = tiny_soco_cfg()
    model = build_model(cfg)
    sd = model.state_dict()
    for name in ("backbone", "roi_heads", "projector"):
        keys = [k for k in sd if k.startswith(name + ".")]
        assert keys and all(torch.equal(sd[k], sd["target." + k]) for k in keys)
    assert not any(k.startswith("target.predictor") for k in sd)
    assert all(not p.requires_grad for p in model.target.parameters())

    # One SGD step moves the online network; the target stays until update_target.
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(model(random_soco_batch(cfg)).values()).backward()
    opt.step()
    online = {k: v.clone() for k, v in model.named_parameters() if not k.startswith("target.")}
    target0 = {k: v.clone() for k, v in model.target.named_parameters()}
    assert any(not torch.equal(online[k], target0[k]) for k in target0)
    model.update_target(0.75)
    for k, t in model.target.named_parameters():
        assert torch.allclose(t, 0.75 * target0[k] + 0.25 * online[k], atol=1e-6), k
    assert all(torch.equal(v, online[k]) for k, v in model.named_parameters() if k in online)

    # The target is part of the state dict, so a resumed model continues exactly.
    resumed = build_model(cfg)
    resumed.load_state_dict(model.state_dict())
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
