"""Read a checkpoint file into a flat state dict without running arbitrary pickled code.

A checkpoint is untrusted input: ``pickle`` (and ``torch.load(weights_only=False)``) can run any
code it names. Files are therefore read by restricted loaders first:

- ``.pkl`` (detectron2 weights, official SoCo): an unpickler that only rebuilds containers,
  numbers, strings and numpy arrays;
- anything else (``.pth``, ``.pth.tar``): ``torch.load(weights_only=True)``, which takes tensors,
  containers and plain values (mmcv's ``meta`` of strings and ints, so full DenseCL
  checkpoints), plus ``argparse.Namespace`` (the training arguments official checkpoints keep).

Only a file those refuse is read by the unrestricted loader, with a warning naming the file.
"""
import argparse
import io
import logging
import os
import pickle
from typing import Any, Dict, Mapping

import numpy as np
import torch

from .layouts import UnknownLayoutError

__all__ = ["load_state_dict", "read_checkpoint"]

logger = logging.getLogger(__name__)

# (module, name) pairs a weights pickle may name: numpy array and scalar reconstruction (numpy
# 1.x and 2.x module paths) and the ordered dict PyTorch state dicts are made of.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}
_SAFE_GLOBALS |= {("numpy", name) for name in np.sctypeDict if isinstance(name, str)}


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside :data:`_SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _load_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    try:
        # latin1: detectron2's model-zoo pickles were written by Python 2
        return _WeightsUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        logger.warning(
            "%s holds more than weights (%s); loading it with unrestricted pickle: only do "
            "this for files you trust",
            path,
            e,
        )
        return pickle.loads(data, encoding="latin1")


def _load_torch(path: str) -> Any:
    try:
        # official SoCo/MoCo/SIM checkpoints pickle their argparse Namespace; rebuilding one only
        # sets attributes, so it joins the allow-list instead of forcing an unrestricted load
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        logger.warning(
            "%s holds more than weights (%s); loading it with weights_only=False: only do this "
            "for files you trust",
            path,
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        return torch.load(path, map_location="cpu", weights_only=False)


def read_checkpoint(path: str) -> Any:
    """The object stored in a checkpoint file, read as safely as the file allows.

    Args:
        path: a ``.pkl`` pickle or a ``torch.save`` file.

    Returns:
        whatever the file holds (usually a dict).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return _load_pickle(path) if path.endswith(".pkl") else _load_torch(path)


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file and return its model state dict.

    The state dict is taken from the top level or from under ``"model"`` (detectron2, official
    SoCo) or ``"state_dict"`` (MoCo, DenseCL, torchvision-style exports). Entries that are not
    arrays (e.g. a step counter stored next to the weights) are left out.

    Args:
        path: the checkpoint file.

    Returns:
        key -> CPU tensor.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        UnknownLayoutError: when the file holds no mapping of tensors.
    """
    obj = read_checkpoint(path)
    for nest in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(nest), Mapping):
            obj = obj[nest]
            break
    if not isinstance(obj, Mapping):
        raise UnknownLayoutError(f"{path}: expected a state dict, got {type(obj).__name__}")
    state = {
        k: torch.as_tensor(v)
        for k, v in obj.items()
        if isinstance(k, str) and isinstance(v, (torch.Tensor, np.ndarray))
    }
    if not state:
        raise UnknownLayoutError(f"{path}: no tensors found (keys: {sorted(map(str, obj))[:8]})")
    return state
