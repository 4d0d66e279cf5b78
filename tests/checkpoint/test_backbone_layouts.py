"""Backbone-only layouts (torchvision, official MoCo / DenseCL, the plugin's neck-free ResNet
methods): detected exactly, and their ResNet lands complete and unchanged in FPN and C4
detectors."""
import logging

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from soco_d2.checkpoint import (
    check_against_detector,
    convert_checkpoint,
    convert_state_dict,
    detect_layout,
    get_layout,
    load_state_dict,
)

from _fixtures import (
    build_detector,
    build_plain_resnet,
    expected_backbone,
    to_densecl_full,
    to_moco,
    to_plugin_plain_resnet,
    to_torchvision,
)

# (arch, depth) pairs whose detectors share the plain ResNet's widths
ARCH_DEPTHS = [("fpn", 18), ("fpn", 50), ("c4", 50)]


def _checkpoint(kind: str, plain):
    """A checkpoint object of layout ``kind`` whose ResNet is ``plain``."""
    if kind == "torchvision":
        return to_torchvision(plain)
    if kind == "torchvision_nested":  # DenseCL's extract step, the released DetCo weights
        return {"state_dict": to_torchvision(plain), "author": "DenseCL"}
    if kind == "moco_official":
        c4_named = {
            ("roi_heads." if k.startswith("res5.") else "backbone.") + k: v
            for k, v in plain.items()
        }
        return {"state_dict": to_moco(c4_named), "arch": "resnet50", "epoch": 200}
    if kind == "densecl_official":
        return to_densecl_full(plain)
    assert kind == "soco_d2"
    return to_plugin_plain_resnet(plain)


@pytest.mark.parametrize(
    "kind", ["torchvision", "torchvision_nested", "moco_official", "densecl_official", "soco_d2"]
)
@pytest.mark.parametrize("arch,depth", ARCH_DEPTHS)
def test_backbone_layout_loads_completely(tmp_path, kind, arch, depth):
    plain = build_plain_resnet(depth)
    ckpt = tmp_path / "pretrained.pth"
    torch.save(_checkpoint(kind, plain), ckpt)
    result = convert_checkpoint(str(ckpt), str(tmp_path / "out.pkl"), arch=arch)
    layout = "torchvision" if kind == "torchvision_nested" else kind
    assert result.layout == layout and result.arch == arch
    expected = expected_backbone(plain, arch)
    assert set(result.model) == set(expected)  # exact detector names: no extra, none missing
    assert result.counts == {"backbone": len(expected), "fpn": 0, "box_head": 0}
    assert result.status["backbone"] == f"converted {len(expected)}"
    assert result.status["fpn"] == result.status["box_head"] == "not pretrained"

    detector = build_detector(arch, depth, seed=123)
    report = check_against_detector(result, detector)
    assert report["missing"]["backbone"] == [] and report["loaded"]["backbone"] == len(expected)
    if arch == "fpn":  # FPN and box head exist in the detector but nothing pretrained them
        assert report["missing"]["fpn"] and report["missing"]["box_head"]
    DetectionCheckpointer(detector).load(str(tmp_path / "out.pkl"))
    loaded = detector.state_dict()
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k


def test_densecl_full_checkpoint_is_not_a_plugin_checkpoint(tmp_path):
    """Its ``backbone.*`` copy uses torchvision names: read as a plugin checkpoint it would
    convert tensors under names no detector has. It must be read through encoder_q.0."""
    plain = build_plain_resnet(18)
    ckpt = to_densecl_full(plain)
    keys = list(ckpt["state_dict"])
    assert any(k.startswith("backbone.layer1.") for k in keys)
    assert not get_layout("soco_d2").detect(keys)
    assert detect_layout(keys).name == "densecl_official"
    result = convert_state_dict(ckpt["state_dict"], arch="c4")
    # the query encoder, not the key encoder (shifted by +1 in the fixture)
    assert torch.equal(
        torch.as_tensor(result.model["backbone.stem.conv1.weight"]), plain["stem.conv1.weight"]
    )
    assert len(result.model) == len(plain)
    dropped = set(result.dropped)
    assert {"queue", "queue_ptr", "queue2", "queue2_ptr", "encoder_q.1.mlp.0.weight"} <= dropped
    assert sum(k.startswith(("backbone.", "encoder_k.")) for k in dropped) == 2 * len(plain) + 2


def test_densecl_copy_that_differs_warns_and_uses_encoder_q(caplog):
    plain = build_plain_resnet(18)
    state = to_densecl_full(plain)["state_dict"]
    state["backbone.conv1.weight"] = state["backbone.conv1.weight"] + 1
    with caplog.at_level(logging.WARNING, logger="soco_d2.checkpoint"):
        result = convert_state_dict(state, arch="fpn")
    assert (
        "backbone.* copy differs from encoder_q.0.* in 1 keys (first: conv1.weight)" in caplog.text
    )
    assert torch.equal(
        torch.as_tensor(result.model["backbone.bottom_up.stem.conv1.weight"]),
        plain["stem.conv1.weight"],
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="soco_d2.checkpoint"):
        convert_state_dict(to_densecl_full(plain)["state_dict"], arch="fpn")
    assert "differs" not in caplog.text


def test_full_densecl_checkpoint_loads_weights_only(tmp_path, caplog):
    """mmcv's ``meta`` holds plain values, so no unrestricted unpickling is needed."""
    ckpt = tmp_path / "densecl_200ep.pth"
    torch.save(to_densecl_full(build_plain_resnet(18)), ckpt)
    with caplog.at_level(logging.WARNING, logger="soco_d2.checkpoint"):
        state = load_state_dict(str(ckpt))
    assert "weights_only=False" not in caplog.text
    assert "encoder_q.0.conv1.weight" in state and "queue2_ptr" in state


def test_torchvision_names_are_renamed_exactly():
    plain = build_plain_resnet(50)
    result = convert_state_dict(to_torchvision(plain), arch="c4")
    # stem BN, a bottleneck BN, a downsample conv and its BN, the last stage in the ROI heads
    for tv, d2 in [
        ("bn1.running_var", "backbone.stem.conv1.norm.running_var"),
        ("layer1.0.bn3.weight", "backbone.res2.0.conv3.norm.weight"),
        ("layer2.0.downsample.0.weight", "backbone.res3.0.shortcut.weight"),
        ("layer3.0.downsample.1.bias", "backbone.res4.0.shortcut.norm.bias"),
        ("layer4.2.conv2.weight", "roi_heads.res5.2.conv2.weight"),
    ]:
        assert torch.equal(torch.as_tensor(result.model[d2]), to_torchvision(plain)[tv]), tv
    assert set(result.dropped) == {"fc.weight", "fc.bias"}


def test_moco_alias_and_detection_exactness():
    plain = build_plain_resnet(18)
    c4_named = {
        ("roi_heads." if k.startswith("res5.") else "backbone.") + k: v for k, v in plain.items()
    }
    moco = to_moco(c4_named)
    assert convert_state_dict(moco, layout="moco").layout == "moco_official"
    # each synthetic checkpoint is accepted by exactly one layout (detect_layout refuses two)
    names = {
        "torchvision": to_torchvision(plain),
        "moco_official": moco,
        "densecl_official": to_densecl_full(plain)["state_dict"],
        "soco_d2": to_plugin_plain_resnet(plain)["model"],
    }
    for name, state in names.items():
        assert detect_layout(state).name == name


def test_plugin_plain_resnet_drops_method_parts():
    plain = build_plain_resnet(18)
    result = convert_state_dict(to_plugin_plain_resnet(plain)["model"], arch="fpn")
    assert set(result.model) == {"backbone.bottom_up." + k for k in plain}
    assert {"queue", "queue_ptr", "global_head.0.weight", "dense_head.0.weight"} <= set(
        result.dropped
    )
    assert not any(k.startswith("target.") for k in result.model)
    # auto: a neck-free plain ResNet has no FPN keys, so it is named for C4
    assert convert_state_dict(to_plugin_plain_resnet(plain)["model"]).arch == "c4"


def test_c4_plugin_checkpoint_moves_res5_into_an_fpn_bottom_up():
    """SoCo R-C4 keeps res5 at roi_heads.res5: for an FPN detector it is the bottom-up res5."""
    plain = build_plain_resnet(50)
    state = {
        ("roi_heads." if k.startswith("res5.") else "backbone.") + k: v for k, v in plain.items()
    }
    state["projector.mlp.0.weight"] = torch.randn(4, 4)
    fpn = convert_state_dict(state, arch="fpn")
    assert set(fpn.model) == set(expected_backbone(plain, "fpn"))
    c4 = convert_state_dict(state)
    assert c4.arch == "c4" and set(c4.model) == set(expected_backbone(plain, "c4"))
    # and a bottom_up-named checkpoint goes to C4 the same way
    bottom_up = {"backbone.bottom_up." + k: v for k, v in plain.items()}
    assert set(convert_state_dict(bottom_up, arch="c4").model) == set(c4.model)
