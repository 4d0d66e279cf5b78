"""``tools/convert_pretrained.py --to torchvision|timm``: pretrained backbones for other
frameworks, and converted ViT weights in detectron2's own LazyConfig ViTDet.

Each export loads with ``strict=True`` but for the classifier, and gives the features of the
detectron2 backbone it came from to 1e-5 (relative and absolute, float32): the same operations
in another order round differently, by about 2e-6 in the ViT's tokens of magnitude up to 7
(timm's fused attention against detectron2's explicit softmax); the ResNets were identical to
the bit (the same kernels in the same order) when this was written.
"""
import re
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from detectron2.modeling import build_model
from timm.models.vision_transformer import VisionTransformer

from soco_d2.checkpoint import convert_state_dict
from soco_d2.checkpoint.export import export_state_dict
from soco_d2.engine import load_cfg
from soco_d2.modeling.sim import TokenViT

from _fixtures import build_plain_resnet, load_cli, to_moco, to_torchvision

ROOT = Path(__file__).resolve().parents[2]
TOL = dict(rtol=1e-5, atol=1e-5)
R50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256"]


def _pretrained(config, opts=()):
    """A pretraining model of ``config`` with trained-looking weights and BN statistics."""
    torch.manual_seed(0)
    model = build_model(load_cfg(str(ROOT / config), list(opts), register=False)).eval()
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith(("running_var", "norm.weight")):
                t.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "norm.bias", "cls_token")):
                t.uniform_(-0.5, 0.5)
            elif name.startswith("backbone.net.blocks."):
                t.add_(0.02 * torch.randn_like(t))
    return model


def _export_cli(tmp_path, capsys, model, to):
    ckpt, out = tmp_path / "model_final.pth", tmp_path / f"{to}.pth"
    torch.save({"model": model.state_dict(), "iteration": 2}, ckpt)
    assert load_cli().main([str(ckpt), str(out), "--to", to]) == 0
    return torch.load(out, map_location="cpu", weights_only=True), capsys.readouterr().out


@pytest.mark.parametrize("depth,config,opts", [
    (18, "configs/demo/mocov2_R18_demo.yaml", ()),
    (50, "configs/demo/densecl_R18_demo.yaml", R50),
])
def test_resnet_export_is_a_torchvision_resnet(tmp_path, capsys, depth, config, opts):
    model = _pretrained(config, opts)
    state, printed = _export_cli(tmp_path, capsys, model, "torchvision")
    assert f"export: torchvision.models.resnet{depth}" in printed, printed
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    incompatible = resnet.load_state_dict(state, strict=False)
    assert sorted(incompatible.missing_keys) == ["fc.bias", "fc.weight"]
    assert incompatible.unexpected_keys == []
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = model.backbone(x)["res5"]
        r = resnet
        got = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
    torch.testing.assert_close(got, expected, **TOL)


def test_official_moco_exports_to_its_torchvision_names():
    """Any ResNet layout of the table exports: the torchvision names come back exactly."""
    plain = build_plain_resnet(50)
    c4 = {("roi_heads." if k.startswith("res5.") else "backbone.") + k: v for k, v in plain.items()}
    result = export_state_dict(to_moco(c4), "torchvision")
    assert result.layout == "moco_official"
    expected = {k: v for k, v in to_torchvision(plain).items() if not k.startswith("fc.")}
    assert set(result.state_dict) == set(expected)
    for k, v in expected.items():
        assert torch.equal(result.state_dict[k], v), k


def test_sim_export_is_a_timm_vision_transformer(tmp_path, capsys):
    model = _pretrained("configs/demo/sim_vit_tiny_demo.yaml")
    state, printed = _export_cli(tmp_path, capsys, model, "timm")
    assert "export: timm VisionTransformer(img_size=64, patch_size=8, embed_dim=96" in printed
    vit = VisionTransformer(img_size=64, patch_size=8, embed_dim=96, depth=4, num_heads=3).eval()
    incompatible = vit.load_state_dict(state, strict=False)
    assert sorted(incompatible.missing_keys) == ["head.bias", "head.weight"]
    assert incompatible.unexpected_keys == []
    # SIM's encoder has no final norm: the export's is timm's initial one, the features are
    # the tokens before it (cls token first, as the SIM encoder returns them)
    assert torch.equal(state["norm.weight"], torch.ones(96))
    vit.norm = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(x), model.backbone["net"](x), **TOL)


@pytest.fixture(scope="module")
def sim_b16_state():
    """A SIM ViT-B/16 at 224 px as the plugin saves it (``backbone.net.*``)."""
    torch.manual_seed(0)
    encoder = TokenViT(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return {"backbone.net." + k: v for k, v in encoder.state_dict().items()}


def test_vit_b16_export_has_the_keys_and_shapes_of_timm_vit_base(sim_b16_state):
    result = export_state_dict(sim_b16_state, "timm")
    assert result.target == "timm vit_base_patch16_224"
    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224", pretrained=False)
    # raises on any shape that differs
    incompatible = vit.load_state_dict(result.state_dict, strict=False)
    assert sorted(incompatible.missing_keys) == ["head.bias", "head.weight"]
    assert incompatible.unexpected_keys == []


def test_converted_sim_covers_detectron2_lazyconfig_vitdet(sim_b16_state):
    """detectron2's own ViTDet (model_zoo configs/common/models/mask_rcnn_vitdet.py, as shipped):
    every ``backbone.net.*`` tensor but the relative-position tables has a converted tensor of
    its shape, and nothing converted falls outside."""
    from detectron2 import model_zoo
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(model_zoo.get_config_file("common/models/mask_rcnn_vitdet.py"))
    torch.manual_seed(0)
    backbone = instantiate(cfg.model.backbone)
    target = {"backbone." + k: v.shape for k, v in backbone.state_dict().items()}
    net = {k: s for k, s in target.items() if k.startswith("backbone.net.")}
    result = convert_state_dict(sim_b16_state)
    assert result.arch == "vitdet"
    rel_pos = [k for k in net if re.search(r"\.attn\.rel_pos_[hw]$", k)]
    assert len(rel_pos) == 2 * 12  # every block of ViTDet-B, windowed and global
    uncovered = [k for k in net if k not in result.model and k not in rel_pos]
    assert uncovered == []
    assert set(result.model) <= set(net)
    for k, v in result.model.items():
        assert tuple(v.shape) == tuple(net[k]), k


def test_export_of_the_wrong_family_fails_clearly(tmp_path, capsys, sim_b16_state):
    ckpt = tmp_path / "vit.pth"
    torch.save({"model": {k: torch.zeros(1) for k in sim_b16_state}}, ckpt)
    assert load_cli().main([str(ckpt), str(tmp_path / "out.pth"), "--to", "torchvision"]) == 2
    assert "exports a ResNet; layout vit_d2 is not one" in capsys.readouterr().err
    torch.save({"model": {"backbone." + k: v for k, v in build_plain_resnet(18).items()}}, ckpt)
    assert load_cli().main([str(ckpt), str(tmp_path / "out.pth"), "--to", "timm"]) == 2
    assert "exports a ViT; layout soco_d2 is not one" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()
