"""Converter round trips: every layout's tensors land, unchanged, in a fresh detector."""
import pickle

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from soco_d2.checkpoint import (
    UnknownLayoutError,
    convert_checkpoint,
    convert_state_dict,
    detect_layout,
)

from _fixtures import build_detector, load_cli, to_moco, to_official_soco, transferred_keys


def _soco_d2_checkpoint(source_state, arch):
    """What DetectionCheckpointer saves for a SoCo run: online + target + MLP heads."""
    head = "roi_heads.box_head." if arch == "fpn" else "roi_heads.res5."
    model = {k: v for k, v in source_state.items() if k.startswith(("backbone.", head))}
    for k, v in list(model.items()):
        model["target." + k] = v + 7.0 if v.is_floating_point() else v
    model["projector.mlp.0.weight"] = torch.randn(16, 8)
    model["predictor.mlp.0.weight"] = torch.randn(16, 8)
    return {"model": model, "optimizer": {}, "iteration": 3}


def _load_and_compare(tmp_path, pkl, source_state, arch, depth):
    """Load ``pkl`` into a detector with other random weights; transferred tensors must equal
    the source exactly and no transferred key may be missing."""
    with open(pkl, "rb") as f:
        data = pickle.load(f)
    assert data["matching_heuristics"] is True and data["__author__"] == "soco_d2"
    expected = transferred_keys(source_state, arch)
    assert set(data["model"]) == expected  # exact detectron2 names, none missing, none extra

    target = build_detector(arch, depth, seed=123)
    DetectionCheckpointer(target).load(str(pkl))
    loaded = target.state_dict()
    for k in expected:
        assert torch.equal(loaded[k], source_state[k]), k
    # parts that were not pretrained keep their own initialisation
    other = [k for k in loaded if k not in expected and loaded[k].is_floating_point()]
    assert other and any(not torch.equal(loaded[k], source_state[k]) for k in other)


@pytest.mark.parametrize("arch,depth", [("fpn", 18), ("fpn", 50), ("c4", 50)])
def test_soco_d2_checkpoint_round_trip(tmp_path, arch, depth):
    source = build_detector(arch, depth).state_dict()
    ckpt = tmp_path / "model_final.pth"
    torch.save(_soco_d2_checkpoint(source, arch), ckpt)
    result = convert_checkpoint(str(ckpt), str(tmp_path / "out.pkl"))
    assert result.layout == "soco_d2" and result.arch == arch
    assert not any(k.startswith(("target.", "projector.", "predictor.")) for k in result.model)
    if arch == "fpn":
        assert result.counts["fpn"] > 0 and result.counts["box_head"] > 0
    else:
        assert result.counts["fpn"] == 0 and result.counts["box_head"] == 0
    assert sum(result.counts.values()) == len(result.model)
    _load_and_compare(tmp_path, tmp_path / "out.pkl", source, arch, depth)


@pytest.mark.parametrize("arch,depth", [("fpn", 18), ("fpn", 50), ("c4", 50)])
def test_official_soco_layout(tmp_path, arch, depth):
    source = build_detector(arch, depth).state_dict()
    official = to_official_soco(source, arch)
    ckpt = tmp_path / "soco_official.pth"
    torch.save({"model": official, "epoch": 100}, ckpt)
    result = convert_checkpoint(str(ckpt), str(tmp_path / "out.pkl"))
    assert result.layout == "soco_official" and result.arch == arch
    assert any(k.startswith("module.projector.") for k in result.dropped)
    _load_and_compare(tmp_path, tmp_path / "out.pkl", source, arch, depth)


def test_moco_layout(tmp_path):
    source = build_detector("c4", 50).state_dict()
    ckpt = tmp_path / "moco_v2_800ep.pth.tar"
    torch.save({"state_dict": to_moco(source), "arch": "resnet50"}, ckpt)
    result = convert_checkpoint(str(ckpt), str(tmp_path / "out.pkl"))
    assert result.layout == "moco_official" and result.arch == "c4"
    # encoder_k, the MLP fc and the queue stay behind
    assert {"module.encoder_q.fc.0.weight", "module.queue"} <= set(result.dropped)
    _load_and_compare(tmp_path, tmp_path / "out.pkl", source, "c4", 50)


def test_moco_layout_into_fpn_detector(tmp_path):
    """A MoCo ResNet also initialises the bottom-up path of an FPN detector."""
    fpn = build_detector("fpn", 50).state_dict()
    c4_like = {k.replace("backbone.bottom_up.", "backbone."): v for k, v in fpn.items()}
    result = convert_state_dict(to_moco(c4_like), arch="fpn")
    expected = {k for k in fpn if k.startswith("backbone.bottom_up.")}
    assert set(result.model) == expected and result.counts["backbone"] == len(expected)
    for k in expected:
        assert torch.equal(torch.as_tensor(result.model[k]), fpn[k])


def test_unknown_layout_fails_clearly(tmp_path, capsys):
    with pytest.raises(UnknownLayoutError, match="unknown checkpoint layout.*encoder.weight"):
        detect_layout(["encoder.weight", "decoder.bias"])
    ckpt = tmp_path / "weird.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, ckpt)
    assert load_cli().main([str(ckpt), str(tmp_path / "out.pkl")]) == 2
    assert "unknown checkpoint layout" in capsys.readouterr().err
    assert not (tmp_path / "out.pkl").exists()


def test_cli_prints_counts_per_group(tmp_path, capsys):
    source = build_detector("fpn", 18).state_dict()
    ckpt = tmp_path / "model_final.pth"
    torch.save(_soco_d2_checkpoint(source, "fpn"), ckpt)
    assert load_cli().main([str(ckpt), str(tmp_path / "out.pkl")]) == 0
    counts = {}
    for line in capsys.readouterr().out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "tensors":
            counts[parts[0]] = int(parts[1])
    n_fpn = sum(k.startswith("backbone.fpn_") for k in source)
    n_head = sum(k.startswith("roi_heads.box_head.") for k in source)
    n_bb = sum(k.startswith("backbone.bottom_up.") for k in source)
    n_dropped = len(_soco_d2_checkpoint(source, "fpn")["model"]) - n_bb - n_fpn - n_head
    assert counts == {"backbone": n_bb, "fpn": n_fpn, "box_head": n_head, "dropped": n_dropped}


def test_cli_says_why_a_group_is_not_pretrained(tmp_path, capsys):
    source = build_detector("c4", 50).state_dict()
    ckpt = tmp_path / "model_final.pth"
    torch.save(_soco_d2_checkpoint(source, "c4"), ckpt)
    # without --arch it would write backbone-only names (tests/checkpoint/test_portable_weights.py)
    assert load_cli().main([str(ckpt), str(tmp_path / "out.pkl"), "--arch", "c4"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert "fpn        not pretrained (a c4 detector has no fpn)" in lines
    assert "box_head   not pretrained (a c4 detector has no box_head)" in lines


def test_groups_leave_the_others_out(tmp_path, capsys):
    source = build_detector("fpn", 18).state_dict()
    ckpt = tmp_path / "model_final.pth"
    torch.save(_soco_d2_checkpoint(source, "fpn"), ckpt)
    state = _soco_d2_checkpoint(source, "fpn")["model"]
    full = convert_state_dict(state)
    part = convert_state_dict(state, groups=("backbone", "fpn"))
    assert part.counts["box_head"] == 0 and full.counts["box_head"] > 0
    assert set(part.model) == {k for k in full.model if not k.startswith("roi_heads.box_head.")}
    assert len(part.dropped) == len(full.dropped) + full.counts["box_head"]
    with pytest.raises(ValueError, match="subset of"):
        convert_state_dict(state, groups=("neck",))
    assert load_cli().main([str(ckpt), str(tmp_path / "out.pkl"), "--groups", "backbone,fpn"]) == 0
    stdout = capsys.readouterr().out
    assert "box_head   not transferred (left out by groups)" in stdout
    assert part.status == {
        "backbone": f"converted {part.counts['backbone']}",
        "fpn": f"converted {part.counts['fpn']}",
        "box_head": "not transferred",
    }
