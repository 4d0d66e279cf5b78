"""Layer-wise lr decay and AdamW groups on a tiny ViTDet: every parameter's documented rate."""
import pytest
import torch
from detectron2.modeling import build_model

from soco_d2.config import get_ssl_cfg
from soco_d2.solver import build_optimizer
from soco_d2.solver.llrd import adamw_param_groups, param_lr_and_decay

DECAY, DEPTH = 0.5, 3


def _tiny_vitdet():
    cfg = get_ssl_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_vit_sfp_backbone"
    cfg.MODEL.VIT.update(IMG_SIZE=64, PATCH_SIZE=16, EMBED_DIM=32, DEPTH=DEPTH, NUM_HEADS=2,
                         WINDOW_SIZE=2, WINDOW_BLOCK_INDEXES=[0, 2], PRETRAIN_IMG_SIZE=32)
    cfg.MODEL.VIT_SFP.update(OUT_CHANNELS=16, SQUARE_PAD=64)
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_BOX_HEAD.update(NAME="FastRCNNConvFCHead", NUM_CONV=1, NUM_FC=1, CONV_DIM=16,
                                  FC_DIM=16, NORM="LN")
    cfg.SOLVER.update(OPTIMIZER="AdamW", BASE_LR=0.1, WEIGHT_DECAY=0.05, LAYER_DECAY=DECAY,
                      ADAMW_BETAS=(0.9, 0.95))
    return cfg, build_model(cfg)


def _expected_factor(name: str) -> float:
    if name.startswith("backbone.net.blocks."):
        i = int(name.split(".")[3])
        return DECAY ** (DEPTH + 1 - (i + 1))
    if name.startswith(("backbone.net.patch_embed.", "backbone.net.pos_embed")):
        return DECAY ** (DEPTH + 1)
    return 1.0


def test_every_parameter_gets_the_documented_rate_and_decay():
    cfg, model = _tiny_vitdet()
    settings = param_lr_and_decay(model, 0.05, DECAY, DEPTH)
    assert set(settings) == {n for n, p in model.named_parameters() if p.requires_grad}
    seen_blocks = set()
    for (name, p) in model.named_parameters():
        factor, wd = settings[name]
        assert factor == pytest.approx(_expected_factor(name)), name
        expected_wd = 0.0 if p.ndim <= 1 or name.endswith("pos_embed") else 0.05
        assert wd == expected_wd, name
        if ".blocks." in name:
            seen_blocks.add(int(name.split(".")[3]))
    assert seen_blocks == set(range(DEPTH))
    # spot checks with literal numbers: block 0 = 0.5^3, block 2 = 0.5, embeddings = 0.5^4
    assert settings["backbone.net.blocks.0.attn.qkv.weight"][0] == 0.125
    assert settings["backbone.net.blocks.2.mlp.fc2.weight"][0] == 0.5
    assert settings["backbone.net.pos_embed"] == (0.0625, 0.0)
    assert settings["backbone.net.blocks.1.attn.rel_pos_h"] == (0.25, 0.05)  # global block
    assert settings["roi_heads.box_predictor.cls_score.weight"] == (1.0, 0.05)
    assert settings["backbone.simfp_2.0.bias"] == (1.0, 0.0)


def test_build_optimizer_uses_the_groups_and_betas(caplog):
    cfg, model = _tiny_vitdet()
    with caplog.at_level("INFO", logger="soco_d2.solver.build"):
        opt = build_optimizer(cfg, model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = sum(1 for n, p in trainable if p.ndim <= 1 or n.endswith("pos_embed"))
    assert (f"ADAMW over {len(trainable)} tensors in {len(opt.param_groups)} groups "
            f"({no_decay} without weight decay)") in caplog.text
    assert isinstance(opt, torch.optim.AdamW)
    lr_of = {id(p): (g["lr"], g["weight_decay"], g["betas"]) for g in opt.param_groups
             for p in g["params"]}
    for name, p in model.named_parameters():
        lr, wd, betas = lr_of[id(p)]
        assert lr == pytest.approx(0.1 * _expected_factor(name)), name
        assert betas == (0.9, 0.95)
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)


def test_layer_decay_off_gives_base_lr_and_groups_are_sorted():
    _, model = _tiny_vitdet()
    groups = adamw_param_groups(model, base_lr=1.0, weight_decay=0.1, layer_decay=0.0)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1.0, 0.1), (1.0, 0.0)]
    with pytest.raises(ValueError, match="SOLVER.LAYER_DECAY"):
        param_lr_and_decay(model, 0.1, layer_decay=1.5)


def test_full_model_clipping_scales_the_global_norm():
    from soco_d2.solver.clip import maybe_add_gradient_clipping

    cfg = get_ssl_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.update(ENABLED=True, CLIP_TYPE="full_model", CLIP_VALUE=1.0)
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = maybe_add_gradient_clipping(cfg, torch.optim.SGD([{"params": [a]}, {"params": [b]}],
                                                          lr=1.0))
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])  # global norm 5
    opt.step()
    # per-tensor clipping would give (-1, -1); the global norm gives (-0.6, -0.8)
    torch.testing.assert_close(torch.cat([a.data, b.data]), torch.tensor([-0.6, -0.8]),
                               rtol=0, atol=1e-6)
    assert isinstance(opt, torch.optim.SGD)
