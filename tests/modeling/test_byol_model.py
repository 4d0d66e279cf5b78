"""BYOL meta-architecture: the symmetric loss against a hand-written one, its minimum on
identical views, the cosine EMA step, a target without predictor or gradient, the asymmetric
blur / solarize of the two views, and backbone keys that load into a detectron2 detector."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

import soco_d2  # noqa: F401  (registers BYOL)
from soco_d2.data.dataset_mappers import build_dataset_mapper
from soco_d2.engine import load_cfg

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs/pretrain/byol_R18_tiny.yaml")


def _model(*opts):
    cfg = load_cfg(TINY, ["INPUT.SSL.VIEW_SIZES", "[32, 32]", *opts], register=False)
    torch.manual_seed(0)
    return build_model(cfg).train()


def _batch(n=4, size=32, seed=1, same=False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        v0 = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
        v1 = v0.clone() if same else torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                                                   generator=g)
        out.append({"views": [v0, v1]})
    return out


def _two_minus_two_cos(p, z):
    """Mean over the batch of 2 - 2 cos between rows, written out."""
    cos = (p * z).sum(1) / (p.norm(dim=1) * z.norm(dim=1))
    return (2 - 2 * cos).mean()


def test_loss_is_the_sum_of_both_directions():
    model = _model()
    batch = _batch()
    with torch.no_grad():
        im = [model.preprocess_view(batch, v) for v in (0, 1)]
        p = [model.predictor(model.project(model._online_container(), x)) for x in im]
        z = [model.project(model.target, x) for x in im]
        loss = model(batch)["loss_byol"]
        swapped = model([{"views": x["views"][::-1]} for x in batch])["loss_byol"]
    one_way = _two_minus_two_cos(p[0], z[1])
    other_way = _two_minus_two_cos(p[1], z[0])
    torch.testing.assert_close(loss, one_way + other_way, rtol=1e-5, atol=1e-6)
    # the directions differ, their sum does not depend on which view comes first
    assert abs(one_way.item() - other_way.item()) > 1e-4
    torch.testing.assert_close(swapped, loss, rtol=1e-5, atol=1e-6)
    assert 0.0 < loss.item() < 8.0


def test_identical_views_give_the_minimal_loss():
    """With the predictor an identity and the target a fresh copy, z = z': loss 0, its floor."""
    model = _model()
    model.predictor = nn.Identity()
    same = model(_batch(same=True))["loss_byol"]
    assert abs(same.item()) < 1e-5
    assert model(_batch())["loss_byol"].item() > 0.1


def test_cosine_momentum_and_the_ema_step():
    model = _model()
    big_k = 20
    for k, expected in ((0, 0.99), (big_k // 2, 0.995), (big_k, 1.0), (5, None)):
        tau = 1 - (1 - 0.99) * (math.cos(math.pi * k / big_k) + 1) / 2
        assert model.target_momentum(k, big_k) == pytest.approx(tau, abs=1e-12)
        if expected is not None:
            assert tau == pytest.approx(expected)
    m = model.target_momentum(5, big_k)
    with torch.no_grad():
        model.projector.linear1.weight.add_(1.0)
        model.backbone.res5[0].conv1.weight.add_(0.5)
    t_proj = model.target["projector"].linear1.weight.clone()
    t_conv = model.target["backbone"].res5[0].conv1.weight.clone()
    t_stats = model.target["backbone"].res5[0].conv1.norm.running_mean.clone()
    with torch.no_grad():
        model.backbone.res5[0].conv1.norm.running_mean.add_(1.0)
    model.update_target(m)
    # target = m * target + (1 - m) * online: it moves (1 - m) of the way towards the online
    torch.testing.assert_close(model.target["projector"].linear1.weight, t_proj + (1 - m) * 1.0)
    t_conv_now = model.target["backbone"].res5[0].conv1.weight
    torch.testing.assert_close(t_conv_now, t_conv + (1 - m) * 0.5)
    # buffers are the target's own: not averaged
    assert torch.equal(model.target["backbone"].res5[0].conv1.norm.running_mean, t_stats)


def test_target_has_no_predictor_and_gets_no_gradient():
    model = _model()
    assert set(model.target.keys()) == {"backbone", "projector"}
    keys = model.state_dict().keys()
    assert any(k.startswith("predictor.") for k in keys)
    assert not any(k.startswith("target.predictor.") for k in keys)
    # BYOL's MLPs end with a Linear without bias (official networks.MLP)
    assert model.projector.linear2.bias is None and model.predictor.linear2.bias is None
    assert model.projector.linear1.bias is not None
    model(_batch())["loss_byol"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    for p in (model.backbone.stem.conv1.weight, model.projector.linear2.weight,
              model.predictor.linear2.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_build_time_and_input_errors_name_the_keys():
    with pytest.raises(ValueError, match="MODEL.BYOL.IN_FEATURE 'res4'"):
        _model("MODEL.BYOL.IN_FEATURE", "res4")
    model = _model()
    with pytest.raises(ValueError, match="2 views"):
        model([{"views": [torch.zeros(3, 32, 32, dtype=torch.uint8)]}] * 4)
    # BN spans each view's whole batch: no split BN, even where MODEL.MOCO.SPLIT_BN is set
    split = _model("MODEL.RESNETS.NORM", "BN", "MODEL.MOCO.SPLIT_BN", "2")
    assert all(type(m) is nn.BatchNorm2d for m in split.backbone.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_views_differ_in_blur_and_solarize_probabilities():
    """View 1 always blurred and never solarised, view 2 blurred 10% and solarised 20%."""
    cfg = load_cfg(TINY, ["INPUT.SSL.COLOR_JITTER_PROB", "0.0", "INPUT.SSL.GRAYSCALE_PROB", "0.0",
                          "INPUT.SSL.BLUR_SIGMA", "(1.0, 2.0)"], register=False)
    assert list(cfg.INPUT.SSL.BLUR_PROB) == [1.0, 0.1]
    assert list(cfg.INPUT.SSL.SOLARIZE_PROB) == [0.0, 0.2]
    colour = build_dataset_mapper(cfg).color_augmentation
    img = np.full((16, 16, 3), 60, np.uint8)
    img[:, 8:] = 200  # a vertical edge: blur moves the column left of it up from 60
    np.random.seed(0)
    draws = 400
    for view, (blur_lo, blur_hi, sol_lo, sol_hi) in enumerate([(1.0, 1.0, 0.0, 0.0),
                                                               (0.05, 0.16, 0.13, 0.28)]):
        outs = [colour(img.copy(), view) for _ in range(draws)]
        blurred = np.mean([o[8, 7, 0] != 60 for o in outs])
        solarised = np.mean([o[8, 12, 0] < 128 for o in outs])
        assert blur_lo <= blurred <= blur_hi, (view, blurred)
        assert sol_lo <= solarised <= sol_hi, (view, solarised)


def test_floor_and_inference():
    model = _model()
    out = model.floor(_batch())
    assert out.dim() == 0
    out.backward()
    assert model.backbone.res5[-1].conv2.weight.grad is not None
    assert model.predictor.linear1.weight.grad is None
    model.eval()
    res = model(_batch(n=3))
    assert len(res) == 3 and len(res[0]["features"]) == 2
    assert res[0]["features"][0].shape == (512,) and res[0]["embeddings"][1].shape == (32,)
    torch.testing.assert_close(res[2]["embeddings"][0].norm(), torch.tensor(1.0))


def test_backbone_keys_are_detectron2_resnet_keys_of_the_demo_detector():
    det_cfg = load_cfg(str(REPO / "configs/demo/mask_rcnn_R18_FPN_demo.yaml"), register=False)
    detector = build_model(det_cfg).state_dict()
    ours = _model().state_dict()
    bottom_up = {k[len("backbone.bottom_up."):]: v for k, v in detector.items()
                 if k.startswith("backbone.bottom_up.")}
    assert bottom_up
    assert {k[len("backbone."):] for k in ours if k.startswith("backbone.")} == set(bottom_up)
    for k, v in bottom_up.items():
        assert ours["backbone." + k].shape == v.shape, k
