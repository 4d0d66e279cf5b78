"""Converted weights against the detector a fine-tuning config builds: exact fit, clear errors,
and the per-group report the converter CLI prints."""
import pickle

import pytest
import torch

from soco_d2.checkpoint import (
    DetectorMismatchError,
    check_against_detector,
    convert_state_dict,
    infer_arch,
    load_detector_cfg,
)

from _configs import tiny_detector_cfg
from _fixtures import build_detector, build_plain_resnet, load_cli, to_torchvision


def _write_cfg(tmp_path, arch, depth, name="ft.yaml"):
    path = tmp_path / name
    path.write_text(tiny_detector_cfg(arch, depth).dump())
    return str(path)


def test_infer_arch():
    assert infer_arch(tiny_detector_cfg("fpn")) == "fpn"
    assert infer_arch(tiny_detector_cfg("c4", 50)) == "c4"
    cfg = tiny_detector_cfg("fpn")
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    assert infer_arch(cfg) == "fpn"
    cfg.MODEL.BACKBONE.NAME = "build_vit_sfp_backbone"
    assert infer_arch(cfg) == "vitdet"
    cfg.MODEL.BACKBONE.NAME = "build_swin_backbone"
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME='build_swin_backbone'"):
        infer_arch(cfg)


def test_report_counts_per_group():
    detector = build_detector("fpn", 18).state_dict()
    result = convert_state_dict(to_torchvision(build_plain_resnet(18)), arch="fpn")
    report = check_against_detector(result, detector)
    bottom_up = [k for k in detector if k.startswith("backbone.bottom_up.")]
    assert report["loaded"] == {"backbone": len(bottom_up), "fpn": 0, "box_head": 0}
    assert report["missing"]["backbone"] == []
    assert report["missing"]["fpn"] == sorted(
        k for k in detector if k.startswith("backbone.fpn_") and "num_batches" not in k
    )
    assert report["missing"]["box_head"] == sorted(
        k for k in detector if k.startswith("roi_heads.box_head.") and "num_batches" not in k
    )
    assert "roi_heads.box_predictor.cls_score.weight" in report["missing"]["other"]
    assert report["ignored"] == []


def test_c4_extra_norm_is_not_a_missing_backbone_key():
    detector = build_detector("c4", 50).state_dict()
    detector = dict(detector, **{"roi_heads.res5.norm.weight": torch.ones(256)})
    result = convert_state_dict(to_torchvision(build_plain_resnet(50)), arch="c4")
    report = check_against_detector(result, detector)
    assert report["missing"]["backbone"] == []
    assert "roi_heads.res5.norm.weight" in report["missing"]["other"]


def test_frozen_bn_detector_ignores_step_counters():
    detector = {
        k: v
        for k, v in build_detector("fpn", 18).state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    result = convert_state_dict(to_torchvision(build_plain_resnet(18)), arch="fpn")
    report = check_against_detector(result, detector)
    assert report["ignored"] and all(k.endswith("num_batches_tracked") for k in report["ignored"])
    assert report["missing"]["backbone"] == []


def test_mismatches_raise_clearly():
    fpn18 = build_detector("fpn", 18).state_dict()
    # the other architecture
    c4 = convert_state_dict(to_torchvision(build_plain_resnet(50)), arch="c4")
    with pytest.raises(DetectorMismatchError, match="named for a c4 detector.*detector is fpn"):
        check_against_detector(c4, fpn18)
    # another depth: R-50 keys (conv3, res2 shortcut) the R-18 detector does not have
    r50 = convert_state_dict(to_torchvision(build_plain_resnet(50)), arch="fpn")
    with pytest.raises(DetectorMismatchError, match="not in the target detector.*DEPTH"):
        check_against_detector(r50, fpn18)
    # the same names with another width
    narrow = {k: v[:1] if v.dim() else v for k, v in build_plain_resnet(18).items()}
    wrong = convert_state_dict(to_torchvision(narrow), arch="fpn")
    with pytest.raises(DetectorMismatchError, match="stem.conv1.weight: weights \\(1, 3, 7, 7\\)"):
        check_against_detector(wrong, fpn18)
    # a layout whose keys land nowhere in the detector
    vit_like = {k.replace("backbone.bottom_up.", "backbone.net."): v for k, v in fpn18.items()}
    with pytest.raises(DetectorMismatchError, match="layout torchvision matches nothing"):
        check_against_detector(r50, {k: v for k, v in vit_like.items() if "net." in k})


def test_group_the_detector_lacks_names_groups():
    """A SoCo FPN checkpoint into a detector without a box head (RetinaNet-like)."""
    source = build_detector("fpn", 18).state_dict()
    result = convert_state_dict(source, arch="fpn")
    no_head = {k: v for k, v in source.items() if not k.startswith("roi_heads.")}
    with pytest.raises(DetectorMismatchError, match="no box_head: leave it out with groups"):
        check_against_detector(result, no_head)
    part = convert_state_dict(source, arch="fpn", groups=("backbone", "fpn"))
    assert check_against_detector(part, no_head)["missing"]["fpn"] == []


def test_cli_with_config_checks_and_reports(tmp_path, capsys):
    cli = load_cli()
    ckpt = tmp_path / "moco.pth"
    torch.save({"state_dict": to_torchvision(build_plain_resnet(18))}, ckpt)
    out = tmp_path / "out.pkl"
    cfg = _write_cfg(tmp_path, "fpn", 18)
    assert cli.main([str(ckpt), str(out), "--config-file", cfg]) == 0
    text = capsys.readouterr().out
    lines = [line.strip() for line in text.splitlines()]
    n_bb = sum(k.startswith("backbone.bottom_up.") for k in build_detector("fpn", 18).state_dict())
    assert "layout: torchvision, detector: fpn" in lines  # arch from the config
    assert f"backbone   {n_bb:4d} tensors" in lines
    assert "fpn        not pretrained (torchvision has backbone only)" in lines
    assert "box_head   not pretrained (torchvision has backbone only)" in lines
    assert any(line.startswith(f"backbone   {n_bb:4d} loaded,    0 missing") for line in lines)
    assert any(line.startswith("fpn           0 loaded,") for line in lines)
    with open(out, "rb") as f:
        assert len(pickle.load(f)["model"]) == n_bb


def test_cli_with_config_refuses_and_writes_nothing(tmp_path, capsys):
    cli = load_cli()
    ckpt = tmp_path / "r50.pth"
    torch.save(to_torchvision(build_plain_resnet(50)), ckpt)
    out = tmp_path / "out.pkl"
    cfg = _write_cfg(tmp_path, "fpn", 18)
    assert cli.main([str(ckpt), str(out), "--config-file", cfg]) == 2
    assert "not in the target detector" in capsys.readouterr().err
    assert not out.exists()
    # overrides after the config fix the depth; an explicit --arch must agree with the config
    opts = [
        "MODEL.RESNETS.DEPTH",
        "50",
        "MODEL.RESNETS.WIDTH_PER_GROUP",
        "8",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "32",
    ]
    assert cli.main([str(ckpt), str(out), "--arch", "c4", "--config-file", cfg, *opts]) == 2
    assert "--arch c4 but" in capsys.readouterr().err
    assert cli.main([str(ckpt), str(out), "--config-file", cfg, *opts]) == 0
    assert "backbone" in capsys.readouterr().out and out.exists()


def test_load_detector_cfg_errors(tmp_path):
    cfg = _write_cfg(tmp_path, "c4", 50)
    assert load_detector_cfg(cfg, ["MODEL.RESNETS.DEPTH", "101"]).MODEL.RESNETS.DEPTH == 101
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        load_detector_cfg(cfg, ["MODEL.RESNETS.DEPTH"])
    with pytest.raises(ValueError, match="ft.yaml.*MODEL.NOT_A_KEY"):
        load_detector_cfg(cfg, ["MODEL.NOT_A_KEY", "1"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_detector_cfg(str(tmp_path / "missing.yaml"))
