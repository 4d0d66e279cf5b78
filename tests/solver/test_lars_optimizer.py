"""LARS: trust-ratio updates, excluded biases/norms, momentum, state round trip."""
import copy

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from soco_d2.config import add_ssl_config
from soco_d2.solver import LARS, build_optimizer, split_excluded_params


def _toy() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 2), nn.LayerNorm(2),
    )


def _cfg(**solver):
    cfg = get_cfg()
    add_ssl_config(cfg)
    cfg.SOLVER.OPTIMIZER = "LARS"
    cfg.SOLVER.BASE_LR = 0.5
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = 0.1  # large, so a wrongly decayed parameter shows
    cfg.SOLVER.LARS_TRUST = 0.001
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _fill_grads(model: nn.Module) -> None:
    model.zero_grad()
    x = torch.randn(2, 3, 8, 8)
    model(x).pow(2).sum().backward()


def _expected_first_step(p, grad, lr, wd, trust, adapted):
    if not adapted:
        return p - lr * grad
    u = grad + wd * p
    return p - lr * trust * p.norm() / u.norm() * u


def test_split_excluded_params_names_biases_and_norms():
    model = _toy()
    regular, excluded, names = split_excluded_params(model)
    assert set(names) == {"0.bias", "1.weight", "1.bias", "4.bias", "5.weight", "5.bias"}
    assert {id(p) for p in regular} == {id(model[0].weight), id(model[4].weight)}
    model[0].weight.requires_grad_(False)
    regular, _, _ = split_excluded_params(model)
    assert [id(p) for p in regular] == [id(model[4].weight)]


def test_first_step_adapts_weights_and_leaves_excluded_plain():
    model = _toy()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    _fill_grads(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(_cfg(), model)
    assert isinstance(opt, LARS)
    opt.step()
    _, _, excluded = split_excluded_params(model)
    for n, p in model.named_parameters():
        adapted = n not in excluded
        want = _expected_first_step(before[n], grads[n], 0.5, 0.1, 0.001, adapted)
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7, msg=n)
    # Excluded parameters really moved by a plain SGD step (not adapted, not decayed).
    plain = before["1.weight"] - 0.5 * grads["1.weight"]
    torch.testing.assert_close(model[1].weight.detach(), plain)


def test_momentum_accumulates_trust_scaled_updates():
    torch.manual_seed(1)
    w = nn.Parameter(torch.randn(5, 3))
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02)
    w0 = w.detach().clone()
    g1, g2 = torch.randn(5, 3), torch.randn(5, 3)
    w.grad = g1.clone()
    opt.step()
    w1 = w.detach().clone()
    u1 = g1 + 0.01 * w0
    u1 = 0.02 * w0.norm() / u1.norm() * u1
    torch.testing.assert_close(w1, w0 - 0.1 * u1)
    w.grad = g2.clone()
    opt.step()
    u2 = g2 + 0.01 * w1
    u2 = 0.02 * w1.norm() / u2.norm() * u2
    torch.testing.assert_close(w.detach(), w1 - 0.1 * (0.9 * u1 + u2))


def test_zero_norm_weight_gets_plain_update():
    w = nn.Parameter(torch.zeros(4))
    opt = LARS([w], lr=0.1, momentum=0.0, weight_decay=0.0, trust_coefficient=0.001)
    w.grad = torch.ones(4)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((4,), -0.1))


def test_exclusion_can_be_disabled():
    model = _toy()
    _fill_grads(model)
    opt = build_optimizer(_cfg(LARS_EXCLUDE_BIAS_AND_NORM=False), model)
    assert len(opt.param_groups) == 1 and not opt.param_groups[0]["lars_exclude"]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.1)


def test_state_dict_round_trip_continues_identically():
    model_a = _toy()
    _fill_grads(model_a)
    opt_a = build_optimizer(_cfg(), model_a)
    opt_a.step()
    model_b = copy.deepcopy(model_a)
    opt_b = build_optimizer(_cfg(), model_b)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for m, o in ((model_a, opt_a), (model_b, opt_b)):
        torch.manual_seed(5)
        _fill_grads(m)
        o.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="Adamax"), _toy())
