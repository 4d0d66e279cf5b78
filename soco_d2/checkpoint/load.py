"""Read a checkpoint file into a flat state dict without running pickled code.

A checkpoint is untrusted input: ``pickle`` (and ``torch.load(weights_only=False)``) runs
whatever functions the file names. Every file is therefore read by a restricted loader:

- ``.pkl`` (detectron2 weights): an unpickler that rebuilds containers, numbers, strings and the
  globals of :data:`_SAFE_GLOBALS` and refuses every other global;
- anything else (``.pth``, ``.pth.tar``): ``torch.load(weights_only=True)``, which takes
  tensors, containers (``OrderedDict`` too), numbers and strings, plus the classes of
  :data:`_TORCH_SAFE_GLOBALS`.

Each class allowed beyond plain data is there because a supported release needs it:

============================  ================================================================
allowed                       needed by
============================  ================================================================
``argparse.Namespace``        training arguments torch-saved next to the weights: official SoCo
                              (``opt``), SIM and MAE (``args``) training checkpoints
``collections.Counter``       a ``MultiStepLR`` state (its milestones): official SoCo trained
                              with ``--lr_scheduler step`` (in ``scheduler``)
``numpy`` arrays, scalars,    ``.pkl`` weights: detectron2's model zoo, official SoCo's
dtypes                        ``current_detectron2_*.pkl``, this plugin's converted weights
``collections.OrderedDict``   ``.pkl`` of a state dict kept in its PyTorch container
``_codecs.encode``            a ``.pkl`` written by Python 3 with ``protocol=2`` (for Python 2
                              readers) rebuilds its arrays' bytes with it
============================  ================================================================

MoCo v2 (``epoch, arch, state_dict, optimizer``), DenseCL (extracted: ``state_dict, author``;
full mmcv checkpoints: ``meta`` of strings and numbers) and this plugin's training checkpoints
(``model``, ``trainer``, ``iteration``) are plain data. A file that names anything else raises
:class:`UntrustedCheckpointError` naming what was refused; nothing in it has run. Only
``trust_pickle=True`` (``--trust-pickle`` on the command lines) reads it unrestricted.
"""
import argparse
import collections
import io
import logging
import os
import pickle
import re
from typing import Any, Dict, Mapping

import numpy as np
import torch

from .layouts import UnknownLayoutError

__all__ = ["TRUST_FLAG", "UntrustedCheckpointError", "load_state_dict", "read_checkpoint"]

logger = logging.getLogger(__name__)

# the command-line flag that reads a refused file anyway, named in every refusal
TRUST_FLAG = "--trust-pickle"

# (module, name) pairs a .pkl may name: numpy array and scalar reconstruction (numpy 1.x and 2.x
# module paths), the ordered dict PyTorch state dicts are made of, and the bytes of a protocol-2
# pickle written by Python 3 (array data; PyTorch's weights-only loader allows it too).
_SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}
_SAFE_GLOBALS |= {("numpy", name) for name in np.sctypeDict if isinstance(name, str)}

# classes torch-saved files may hold beyond tensors and plain data (see the table above):
# rebuilding either sets attributes or items on a plain object; the values inside are restricted.
# Recent PyTorch allows Counter by default; naming it keeps older versions reading SoCo's files.
_TORCH_SAFE_GLOBALS = [argparse.Namespace, collections.Counter]


class UntrustedCheckpointError(ValueError):
    """A checkpoint the restricted loaders refuse: it names a function or class outside the
    allow-list (or a pickle opcode they do not take), so loading it could run code.

    Attributes:
        path: the file.
        refused: what was refused, e.g. ``"global posix.system"``.
    """

    def __init__(self, path: str, refused: str):
        self.path, self.refused = path, refused
        super().__init__(
            f"{path}: refused {refused}; a checkpoint that needs this may run code when loaded, "
            f"so the file may be unsafe. If you trust its source, load it anyway with "
            f"{TRUST_FLAG}"
        )


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside :data:`_SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise _RefusedGlobal(f"global {module}.{name}")


def _load_pickle(path: str, trust_pickle: bool) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    if trust_pickle:
        logger.info("reading %s with unrestricted pickle (%s)", path, TRUST_FLAG)
        return pickle.loads(data, encoding="latin1")
    try:
        # latin1: detectron2's model-zoo pickles were written by Python 2
        return _WeightsUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as e:
        raise UntrustedCheckpointError(path, str(e)) from None


def _refused_by_torch(message: str) -> str:
    """What ``torch.load(weights_only=True)`` refused, from its (multi-paragraph) message."""
    found = re.search(r"GLOBAL (\S+)", message)
    if found:
        return f"global {found.group(1)}"
    found = re.search(r"Unsupported operand (\S+)", message)
    if found:
        return f"pickle opcode {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: (.+)", message)
    if found:
        return found.group(1).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else "its content"


def _load_torch(path: str, trust_pickle: bool) -> Any:
    if trust_pickle:
        logger.info("reading %s with weights_only=False (%s)", path, TRUST_FLAG)
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(_TORCH_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UntrustedCheckpointError(path, _refused_by_torch(str(e))) from None
    except RuntimeError as e:
        if "legacy .tar format" not in str(e):
            raise
        raise UntrustedCheckpointError(
            path, "the legacy .tar format of PyTorch < 0.4, which only an unrestricted load reads"
        ) from None


def read_checkpoint(path: str, trust_pickle: bool = False) -> Any:
    """The object stored in a checkpoint file, read without running pickled code.

    Args:
        path: a ``.pkl`` pickle or a ``torch.save`` file.
        trust_pickle: read it with unrestricted unpickling, which runs whatever the file names;
            only for files from a trusted source.

    Returns:
        whatever the file holds (usually a dict).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        UntrustedCheckpointError: when the file holds more than the restricted loaders take
            (and ``trust_pickle`` is False); nothing in it has run.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    load = _load_pickle if path.endswith(".pkl") else _load_torch
    return load(path, trust_pickle)


def load_state_dict(path: str, trust_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file and return its model state dict.

    The state dict is taken from the top level or from under ``"model"`` (detectron2, official
    SoCo) or ``"state_dict"`` (MoCo, DenseCL, torchvision-style exports). Entries that are not
    arrays (e.g. a step counter stored next to the weights) are left out.

    Args:
        path: the checkpoint file.
        trust_pickle: see :func:`read_checkpoint`.

    Returns:
        key -> CPU tensor.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        UntrustedCheckpointError: see :func:`read_checkpoint`.
        UnknownLayoutError: when the file holds no mapping of tensors.
    """
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
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
