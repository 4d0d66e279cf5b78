"""ViT weights -> ViTDet: this plugin's SIM checkpoints, the official SIM checkpoint (read
weights-only) and MAE-layout encoders load into the demo ViTDet with only the relative-position
tables missing from its ViT."""
import argparse
import re
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from soco_d2.checkpoint import check_against_detector, convert_state_dict, save_detectron2_weights
from soco_d2.checkpoint.layouts.vit import load_sim_official
from soco_d2.engine import load_cfg

ROOT = Path(__file__).resolve().parents[2]
SIM_DEMO = str(ROOT / "configs/demo/sim_vit_tiny_demo.yaml")
VITDET_DEMO = str(ROOT / "configs/demo/vitdet_mask_rcnn_tiny_demo.yaml")
REL_POS = re.compile(r"^backbone\.net\.blocks\.\d+\.attn\.rel_pos_[hw]$")


@pytest.fixture(scope="module")
def sim_state():
    torch.manual_seed(0)
    model = build_model(load_cfg(SIM_DEMO, register=False))
    with torch.no_grad():  # make every encoder tensor distinct from a fresh detector's
        for p in model.backbone.parameters():
            p.add_(0.01)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(1)
    return build_model(load_cfg(VITDET_DEMO, register=False))


def _official(sim_state):
    """The official SIM checkpoint layout of the same weights: bare encoder names, momentum
    copies as mm_*, decoder parts, a teacher norm."""
    out = {}
    for k, v in sim_state.items():
        if k.startswith("backbone.net."):
            out[k[len("backbone.net."):]] = v
        elif k.startswith("target.backbone.net.blocks."):
            out["mm_" + k[len("target.backbone.net."):]] = v
    out.update({"mm_cls_token": out["cls_token"], "mask_token": torch.zeros(1, 1, 96),
                "decoder_pos_mlp.weight": torch.zeros(96, 192),
                "decoder_embed.weight": torch.zeros(96, 96),
                "projector_decoder_blocks.0.norm1.bn.weight": torch.ones(96)})
    return out


def _mae(sim_state):
    out = {k[len("backbone.net."):]: v for k, v in sim_state.items()
           if k.startswith("backbone.net.")}
    out.update({"norm.weight": torch.ones(96), "norm.bias": torch.zeros(96),
                "decoder_embed.weight": torch.zeros(64, 96), "mask_token": torch.zeros(1, 1, 64),
                "decoder_blocks.0.attn.qkv.weight": torch.zeros(192, 64)})
    return out


def _check_loads(result, detector, sim_state, tmp_path):
    report = check_against_detector(result, detector)
    vit_missing = [k for k in report["missing"]["backbone"] if k.startswith("backbone.net.")]
    assert vit_missing and all(REL_POS.match(k) for k in vit_missing), vit_missing
    # every block's two tables, nothing else of the ViT
    assert len(vit_missing) == 2 * len(detector.backbone.net.blocks)
    path = str(tmp_path / "vit.pkl")
    save_detectron2_weights(result, path)
    DetectionCheckpointer(detector).load(path)
    state = detector.state_dict()
    for k in ("backbone.net.patch_embed.proj.weight", "backbone.net.pos_embed",
              "backbone.net.blocks.3.mlp.fc2.bias", "backbone.net.blocks.0.attn.qkv.weight"):
        torch.testing.assert_close(state[k], sim_state[k], rtol=0, atol=0, msg=k)
    assert "backbone.net.cls_token" not in result.model


def test_plugin_sim_checkpoint(sim_state, detector, tmp_path):
    result = convert_state_dict(sim_state)
    assert (result.layout, result.arch) == ("vit_d2", "vitdet")
    assert not any(k.startswith("backbone.net.") and "target" in k for k in result.model)
    assert any(k.startswith("target.") for k in result.dropped)
    _check_loads(result, detector, sim_state, tmp_path)


def test_official_sim_checkpoint_read_weights_only(sim_state, detector, tmp_path):
    path = str(tmp_path / "checkpoint-1599.pth")
    torch.save({"model": _official(sim_state), "optimizer": {}, "epoch": 1599, "scaler": {},
                "args": argparse.Namespace(model="sim_vit_base_patch16", blr=6.25e-5)}, path)
    with pytest.raises(Exception, match="Namespace|weights_only|Unsupported"):
        torch.load(path, weights_only=True)  # why a plain weights-only load is not enough
    state = load_sim_official(path)
    result = convert_state_dict(state)
    assert result.layout == "sim_official"
    assert {"mm_cls_token", "mask_token", "decoder_pos_mlp.weight"} <= set(result.dropped)
    _check_loads(result, detector, sim_state, tmp_path)


def test_mae_layout_encoder(sim_state, detector, tmp_path):
    result = convert_state_dict(_mae(sim_state))
    assert result.layout == "mae"
    assert {"norm.weight", "cls_token", "decoder_embed.weight"} <= set(result.dropped)
    _check_loads(result, detector, sim_state, tmp_path)


def test_resnet_arch_is_refused_for_vit_weights(sim_state):
    with pytest.raises(Exception, match=r"arch must be .auto. or one of \(.vitdet.,\) for layout mae"):
        convert_state_dict(_mae(sim_state), arch="fpn")
