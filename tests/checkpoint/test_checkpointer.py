"""RestrictedCheckpointer: detectron2's checkpointer reading .pkl weights without running
pickled code (MODEL.WEIGHTS of fine-tunes and evaluations), and the .pkl formats detectron2
reads."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from soco_d2.checkpoint import RestrictedCheckpointer, UntrustedCheckpointError

from _hostile_checkpoints import Note, assert_nothing_ran, payloads, save, write_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _linear():
    torch.manual_seed(0)
    return nn.Linear(2, 3)


@pytest.mark.parametrize("payload", ["os_system", "function"])
def test_hostile_pkl_is_refused_and_runs_nothing(tmp_path, payload):
    marker = str(tmp_path / "marker")
    path = write_checkpoint(tmp_path / "evil.pkl", payloads(marker)[payload])
    with pytest.raises(UntrustedCheckpointError, match="--trust-pickle"):
        RestrictedCheckpointer(_linear()).load(path)
    assert_nothing_ran(marker)


def test_detectron2_and_caffe2_pkl_formats_load(tmp_path):
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)
    bias = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    # detectron2's format: names as they are
    d2 = save({"model": {"weight": weight, "bias": bias}, "__author__": "me"}, tmp_path / "d2.pkl")
    model = _linear()
    RestrictedCheckpointer(model).load(d2)
    assert np.array_equal(model.weight.detach().numpy(), weight)
    # Detectron's format: arrays under "blobs", momenta dropped, names matched by heuristics
    caffe2 = save(
        {"blobs": {"weight": weight * 2, "bias": bias, "weight_momentum": weight}},
        tmp_path / "caffe2.pkl",
    )
    model = _linear()
    checkpoint = RestrictedCheckpointer(model).load(caffe2)
    assert np.array_equal(model.weight.detach().numpy(), weight * 2)
    assert np.array_equal(model.bias.detach().numpy(), bias)
    assert checkpoint == {"__author__": "Caffe2", "matching_heuristics": True}


def test_trust_pickle_reads_a_file_that_needs_it(tmp_path):
    weights = {"weight": torch.full((3, 2), 7.0), "bias": torch.zeros(3)}
    path = write_checkpoint(tmp_path / "noted.pkl", Note("hi"), weights=weights)
    with pytest.raises(UntrustedCheckpointError, match="Note"):
        RestrictedCheckpointer(_linear()).load(path)
    model = _linear()
    RestrictedCheckpointer(model, trust_pickle=True).load(path)
    assert torch.equal(model.weight.detach(), weights["weight"])


def test_pth_checkpoints_go_to_detectron2(tmp_path):
    source = _linear()
    with torch.no_grad():
        source.weight.fill_(5.0)
    path = str(tmp_path / "model.pth")
    torch.save({"model": source.state_dict(), "iteration": 3}, path)
    model = _linear()
    rest = RestrictedCheckpointer(model).load(path)
    assert torch.equal(model.weight.detach(), source.weight.detach()) and rest == {"iteration": 3}



def test_train_net_refuses_a_hostile_pkl_weights_file(tmp_path, load_script):
    """tools/train_net.py --eval-only with a hostile .pkl MODEL.WEIGHTS: refused, nothing runs
    (fine-tunes read MODEL.WEIGHTS through the same checkpointer class)."""
    marker = str(tmp_path / "marker")
    path = write_checkpoint(tmp_path / "evil.pkl", payloads(marker)["function"])
    train_net = load_script("tools/train_net.py")
    args = train_net.get_parser().parse_args([
        "--config-file", str(REPO / "configs/demo/mask_rcnn_R18_FPN_demo.yaml"), "--eval-only",
        "MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    with pytest.raises(UntrustedCheckpointError, match="write_marker"):
        train_net.main(args)
    assert_nothing_ran(marker)
