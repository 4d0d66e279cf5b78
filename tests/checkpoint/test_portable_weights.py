"""A backbone-only conversion without --config-file loads into C4 and FPN detectors alike.

The checkpoints are what the plugin saves for the demo MoCo v2, DenseCL and DetCo pretrainings
(their models' state dicts as ``DetectionCheckpointer`` writes them); the detectors are the demo
Mask R-CNN R-18 FPN and the SSL C4 protocol. Every backbone tensor of the detector must come
from the file (``soco_d2.checkpoint.coverage``) with the pretrained value.
"""
import pickle
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from soco_d2.checkpoint.coverage import LoadRecordingCheckpointer, check_loaded_weights
from soco_d2.engine import load_cfg

from _fixtures import load_cli

ROOT = Path(__file__).resolve().parents[2]
FPN_DEMO = str(ROOT / "configs/demo/mask_rcnn_R18_FPN_demo.yaml")
C4_SSL = str(ROOT / "configs/coco/Base-RCNN-C4-SSL.yaml")
# a narrow R-50 for the C4 detector (its res5 head is built of bottleneck blocks)
NARROW_R50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
              "MODEL.RESNETS.RES2_OUT_CHANNELS", "32"]


def _pretraining_checkpoint(config, path, opts=()):
    """``model_final.pth`` of a pretraining built from ``config``; returns its state dict."""
    torch.manual_seed(0)
    model = build_model(load_cfg(config, list(opts), register=False))
    state = model.state_dict()
    with torch.no_grad():  # distinct from any fresh detector, BN statistics included
        for k, v in state.items():
            if v.is_floating_point():
                v.add_(torch.rand_like(v))
    torch.save({"model": state, "iteration": 2}, path)
    return state


def _convert(tmp_path, capsys, ckpt):
    out = tmp_path / "converted.pkl"
    assert load_cli().main([str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layout: soco_d2, detector: resnet" in printed, printed
    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["matching_heuristics"] is True
    assert all(k.startswith(("stem.", "res2.", "res3.", "res4.", "res5.")) for k in data["model"])
    return out


def _load(detector_cfg, weights):
    torch.manual_seed(1)
    detector = build_model(detector_cfg)
    checkpointer = LoadRecordingCheckpointer(detector)
    checkpointer.load(str(weights))
    return detector, check_loaded_weights(checkpointer, str(weights))


@pytest.mark.parametrize("method", ["mocov2", "densecl", "detco"])
def test_backbone_only_conversion_loads_into_the_demo_fpn_detector(tmp_path, capsys, method):
    ckpt = tmp_path / "model_final.pth"
    source = _pretraining_checkpoint(str(ROOT / f"configs/demo/{method}_R18_demo.yaml"), ckpt)
    weights = _convert(tmp_path, capsys, ckpt)
    detector, (loaded, total) = _load(load_cfg(FPN_DEMO, register=False), weights)
    assert (loaded, total) == (100, 100)  # 100 tensors besides BN step counters
    state = detector.state_dict()
    for key in state:
        if key.startswith("backbone.bottom_up.") and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(
                state[key], source["backbone." + key[len("backbone.bottom_up."):]],
                rtol=0, atol=0, msg=key,
            )


def test_the_same_file_loads_into_a_c4_detector(tmp_path, capsys):
    ckpt = tmp_path / "model_final.pth"
    source = _pretraining_checkpoint(
        str(ROOT / "configs/demo/mocov2_R18_demo.yaml"), ckpt, NARROW_R50
    )
    weights = _convert(tmp_path, capsys, ckpt)
    cfg = load_cfg(C4_SSL, ["MODEL.DEVICE", "cpu", *NARROW_R50], register=False)
    detector, (loaded, total) = _load(cfg, weights)
    # 53 convolutions with a norm, 5 tensors each; res5 lives in the ROI heads
    assert (loaded, total) == (265, 265)
    state = detector.state_dict()
    compared = 0
    for key in state:
        if key.startswith(("backbone.", "roi_heads.res5.")) and ".res5.norm." not in key:
            name = "backbone." + key.split(".", 1)[1]
            torch.testing.assert_close(state[key], source[name], rtol=0, atol=0, msg=key)
            compared += 1
    assert compared == len([k for k in source if k.startswith("backbone.")])
    # the norm the C4 fine-tune adds after res5 is not part of any pretraining
    assert "roi_heads.res5.norm.weight" in state


def test_the_old_c4_names_load_nothing_into_an_fpn_detector(tmp_path, capsys):
    """What the check in the Trainer is for: --arch c4 names in the demo FPN detector."""
    ckpt = tmp_path / "model_final.pth"
    _pretraining_checkpoint(str(ROOT / "configs/demo/mocov2_R18_demo.yaml"), ckpt)
    out = tmp_path / "c4.pkl"
    assert load_cli().main([str(ckpt), str(out), "--arch", "c4"]) == 0
    from soco_d2.checkpoint.coverage import BackboneNotLoadedError

    with pytest.raises(BackboneNotLoadedError, match="initialised 0 of the detector's 100 "):
        _load(load_cfg(FPN_DEMO, register=False), out)
