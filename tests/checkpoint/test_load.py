"""Reading checkpoint files: restricted loaders, unrestricted only with ``trust_pickle``."""
import argparse
import logging
import pickle
from fractions import Fraction

import numpy as np
import pytest
import torch

from soco_d2.checkpoint import (
    UnknownLayoutError,
    UntrustedCheckpointError,
    load_state_dict,
)


def test_pkl_of_arrays_loads_without_warning(tmp_path, caplog):
    path = tmp_path / "weights.pkl"
    arrays = {"conv1.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int64(3)}
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "x", "matching_heuristics": True}, f)
    with caplog.at_level(logging.WARNING, logger="soco_d2.checkpoint"):
        state = load_state_dict(str(path))
    assert caplog.text == ""
    assert list(state) == ["conv1.weight"]  # the numpy scalar is not an array of weights
    assert torch.equal(state["conv1.weight"], torch.arange(6.0).reshape(2, 3))


def test_pkl_with_other_objects_is_refused_naming_the_class(tmp_path):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.ones(2)}, "extra": Fraction(1, 3)}, f)
    with pytest.raises(UntrustedCheckpointError, match="odd.pkl: refused global fractions.Fract"):
        load_state_dict(str(path))
    state = load_state_dict(str(path), trust_pickle=True)
    assert torch.equal(state["w"], torch.ones(2, dtype=torch.float64))


def test_torch_checkpoint_with_namespace_loads_weights_only(tmp_path, caplog):
    """Official SoCo / MoCo checkpoints keep their argparse arguments next to the weights."""
    path = tmp_path / "official.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.03)}, path)
    with caplog.at_level(logging.WARNING, logger="soco_d2.checkpoint"):
        state = load_state_dict(str(path))
    assert caplog.text == "" and list(state) == ["w"]


def test_torch_checkpoint_with_other_objects_is_refused_naming_the_class(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "ratio": Fraction(1, 3)}, path)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_state_dict(str(path))
    assert info.value.refused == "global fractions.Fraction"
    assert str(info.value).startswith(f"{path}: refused global fractions.Fraction;")
    assert "may be unsafe" in str(info.value) and "--trust-pickle" in str(info.value)
    assert list(load_state_dict(str(path), trust_pickle=True)) == ["w"]


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_state_dict(str(tmp_path / "nothing.pth"))
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(UnknownLayoutError, match="list.pth: expected a state dict, got list"):
        load_state_dict(str(path))
