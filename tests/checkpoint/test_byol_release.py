"""The official BYOL weights (google-deepmind/deepmind-research byol/, a dill pickle of haiku
parameters) reach detectron2 through their public PyTorch conversion (chigur/byol-convert
``convert.py``): a bare torchvision ResNet-50 state dict, saved with ``torch.save``, holding the
online encoder's weights and BN statistics (no ``num_batches_tracked``) and the online linear
classifier as ``fc.*``. The existing ``torchvision`` layout reads it; no BYOL layout is needed."""
import torch

from soco_d2.checkpoint import check_against_detector, convert_checkpoint

from _fixtures import build_detector, build_plain_resnet, expected_backbone, to_torchvision


def _byol_convert_output(plain):
    """What byol-convert writes for a ResNet whose detectron2 state dict is ``plain``."""
    state = {
        k: v for k, v in to_torchvision(plain).items() if not k.endswith("num_batches_tracked")
    }
    state["fc.weight"] = torch.randn(1000, 8)  # the online classifier (narrow test ResNet)
    state["fc.bias"] = torch.randn(1000)
    return state


def test_byol_convert_output_loads_completely_into_an_fpn_detector(tmp_path):
    plain = build_plain_resnet(50)
    src = tmp_path / "pretrain_res50x1.pth.tar"
    torch.save(_byol_convert_output(plain), src)
    result = convert_checkpoint(str(src), str(tmp_path / "byol.pkl"), arch="fpn")
    assert result.layout == "torchvision"
    assert set(result.dropped) == {"fc.weight", "fc.bias"}
    expected = {k: v for k, v in expected_backbone(plain, "fpn").items()
                if not k.endswith("num_batches_tracked")}
    assert set(result.model) == set(expected)
    report = check_against_detector(result, build_detector("fpn", 50))
    # BN step counters are never required: the whole backbone is covered
    assert report["missing"]["backbone"] == [] and report["loaded"]["backbone"] == len(expected)
    for k in ("backbone.bottom_up.stem.conv1.norm.running_var",
              "backbone.bottom_up.res5.2.conv3.weight"):
        assert torch.equal(torch.as_tensor(result.model[k]), expected[k]), k
