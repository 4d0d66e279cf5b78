"""The SIM meta-architecture and mapper on the tiny config: inputs, EMA, frozen patch embed."""
import os

import pytest
import torch
from detectron2.modeling import build_model

from soco_d2.data.dataset_mappers import build_dataset_mapper
from soco_d2.engine import load_cfg
from soco_d2.solver import build_optimizer
from _data import write_random_images
from _paths import CONFIGS

TINY = os.path.join(CONFIGS, "pretrain/sim_vit_tiny.yaml")


@pytest.fixture(scope="module")
def cfg():
    return load_cfg(TINY, register=False)


@pytest.fixture(scope="module")
def batch(cfg, tmp_path_factory):
    names = [f"{i}.png" for i in range(3)]
    root = write_random_images(tmp_path_factory.mktemp("sim_imgs"), height=48, width=56,
                               names=names)
    mapper = build_dataset_mapper(cfg)
    return [mapper({"file_name": f"{root}/{n}", "image_id": i}) for i, n in enumerate(names)]


def test_mapper_outputs(batch):
    for x in batch:
        assert len(x["views"]) == 2 and all(v.shape == (3, 32, 32) for v in x["views"])
        assert x["mask"].shape == (16,) and x["mask"].dtype == torch.bool
        assert int(x["mask"].sum()) == 9
        assert x["view_regions"].shape == (2, 4) and x["view_flipped"].shape == (2,)
        assert x["image_size"] == (48, 56)


def test_names_frozen_patch_embed_and_optimizer(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    keys = model.state_dict().keys()
    assert {"backbone.net.patch_embed.proj.weight", "backbone.net.pos_embed",
            "backbone.net.cls_token", "backbone.net.blocks.1.mlp.fc2.weight"} <= set(keys)
    assert any(k.startswith("target.backbone.net.blocks.") for k in keys)
    assert any(k.startswith("target.projector.0.norm1.bn.") for k in keys)
    assert not any(k.startswith("target.predictor") for k in keys)
    pe = model.backbone["net"].patch_embed.proj.weight
    assert not pe.requires_grad and not model.backbone["net"].pos_embed.requires_grad
    opt_params = {id(p) for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    assert id(pe) not in opt_params and id(model.mask_token) in opt_params
    assert not any(id(p) in opt_params for p in model.target.parameters())


def test_encoder_init_xavier_or_the_detectors_own(cfg):
    from detectron2.modeling.backbone.vit import ViT

    torch.manual_seed(0)
    enc = build_model(cfg).backbone["net"]
    qkv = enc.blocks[0].attn.qkv.weight
    bound = (6.0 / sum(qkv.shape)) ** 0.5  # xavier-uniform (SIM's)
    assert float(qkv.abs().max()) <= bound and float(qkv.std()) > 0.8 * bound / 3**0.5
    tn_cfg = cfg.clone()
    tn_cfg.defrost()
    tn_cfg.MODEL.SIM.ENCODER_INIT = "trunc_normal"
    torch.manual_seed(0)
    model = build_model(tn_cfg)
    tn = model.backbone["net"]
    v = cfg.MODEL.VIT
    torch.manual_seed(0)
    vit = ViT(img_size=v.PRETRAIN_IMG_SIZE, patch_size=v.PATCH_SIZE, embed_dim=v.EMBED_DIM,
              depth=v.DEPTH, num_heads=v.NUM_HEADS)
    # every linear and the patch conv drawn as detectron2's ViT draws them; the target starts equal
    for name, p in tn.named_parameters():
        if p.dim() == 2 or name.startswith("patch_embed"):
            ref = dict(vit.named_parameters())[name]
            assert abs(float(p.std()) - float(ref.std())) < 0.15 * float(ref.std()), name
    assert torch.equal(model.target.backbone["net"].blocks[0].attn.qkv.weight,
                       tn.blocks[0].attn.qkv.weight)
    tn_cfg.MODEL.SIM.ENCODER_INIT = "kaiming"
    with pytest.raises(ValueError, match="ENCODER_INIT"):
        build_model(tn_cfg)


def test_learned_position_table_trains_without_decay(cfg, batch):
    lp_cfg = cfg.clone()
    lp_cfg.defrost()
    lp_cfg.MODEL.SIM.POS_EMBED = "learned"
    torch.manual_seed(0)
    model = build_model(lp_cfg)
    pos = model.backbone["net"].pos_embed
    assert pos.requires_grad and abs(float(pos.std()) - 0.02) < 0.005
    groups = build_optimizer(lp_cfg, model).param_groups
    assert [g["weight_decay"] for g in groups if any(p is pos for p in g["params"])] == [0.0]
    model.train()
    model(batch)["loss_sim"].backward()
    assert pos.grad is not None and float(pos.grad.abs().sum()) > 0
    # the fixed sin-cos table (SIM's) is not a trained parameter; its scale is a key
    fixed = build_model(cfg).backbone["net"].pos_embed
    assert not fixed.requires_grad
    lp_cfg.MODEL.SIM.POS_EMBED, lp_cfg.MODEL.SIM.POS_EMBED_SCALE = "sincos", 0.05
    scaled = build_model(lp_cfg).backbone["net"].pos_embed
    assert not scaled.requires_grad and torch.allclose(scaled, 0.05 * fixed)
    lp_cfg.MODEL.SIM.POS_EMBED = "rope"
    with pytest.raises(ValueError, match="POS_EMBED"):
        build_model(lp_cfg)


def test_ema_moves_parameters_not_buffers(cfg, batch):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    model(batch)  # BN statistics of online and target move by their own forward passes
    online = model.decoder_embed.weight
    with torch.no_grad():
        online.add_(1.0)
        model.projector[0].norm1.bn.running_mean.fill_(5.0)
    t_before = model.target["decoder_embed"].weight.clone()
    bn_before = model.target["projector"][0].norm1.bn.running_mean.clone()
    model.update_target(0.75)
    torch.testing.assert_close(
        model.target["decoder_embed"].weight, 0.75 * t_before + 0.25 * online.detach()
    )
    assert torch.equal(model.target["projector"][0].norm1.bn.running_mean, bn_before)


def test_loss_backward_reaches_online_only_and_floor(cfg, batch):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    loss = model(batch)["loss_sim"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.mask_token.grad is not None and model.decoder_pos_mlp.weight.grad is not None
    assert model.backbone["net"].blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in model.target.parameters())
    model.zero_grad()
    model.floor(batch).backward()
    assert model.backbone["net"].cls_token.grad is not None


def test_eval_returns_online_encoder_tokens(cfg, batch):
    model = build_model(cfg).eval()
    out = model(batch)
    assert out[0]["patch_tokens"].shape == (16, 48) and out[0]["cls"].shape == (48,)


def test_bad_inputs_are_named(cfg, batch):
    model = build_model(cfg).train()
    bad = [dict(batch[0])]
    del bad[0]["mask"]
    with pytest.raises(KeyError, match="mask"):
        model(bad)
    cfg2 = cfg.clone()
    cfg2.defrost()
    cfg2.INPUT.SSL.VIEW_SIZES = [32, 24]
    with pytest.raises(ValueError, match="INPUT.SSL.VIEW_SIZES"):
        build_model(cfg2)


def test_token_spectra_of_whole_views(cfg, batch):
    model = build_model(cfg).eval()
    views = [x["views"][1] for x in batch]
    out = model.token_spectra(views)
    assert set(out) == {"encoder", "target"}
    for spec in out.values():
        assert 0.0 < spec["top1"] <= spec["top3"] <= 1.0 + 1e-9
        assert 1.0 <= spec["erank"] <= spec["dim"]
    # the target is the EMA copy: at init it encodes like the online encoder, then projects
    assert out["encoder"]["dim"] == cfg.MODEL.VIT.EMBED_DIM
    assert out["target"]["dim"] == cfg.MODEL.SIM.DECODER_EMBED_DIM
