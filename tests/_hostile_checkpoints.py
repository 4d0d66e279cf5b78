"""Checkpoint files that run code when unpickled without restriction, and one that only needs
``--trust-pickle`` to load, for the tests of soco_d2/checkpoint/load.py and its callers.

Every hostile file holds real weights next to its payload, as a tampered release would; the
payload leaves a marker file behind if it ever runs.
"""
import os
import pickle

import torch

# hostile files of each container the loaders read: zip torch.save, PyTorch's pre-1.6 format
# (MoCo v2's .pth.tar release), and a detectron2-style pickle
SUFFIXES = [".pth", ".pth.tar", ".pkl"]


def write_marker(path: str) -> None:
    """The function a hostile pickle calls: proof that code from the file ran."""
    with open(path, "w") as f:
        f.write("ran\n")


class RunsCommand:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class WritesMarker:
    """Unpickles as ``write_marker(path)``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return write_marker, (self.path,)


class Note:
    """A harmless class no release holds: a file with one loads only with ``--trust-pickle``."""

    def __init__(self, text: str):
        self.text = text


def payloads(marker: str) -> dict:
    """Hostile payloads by name, each creating ``marker`` when it runs."""
    return {"os_system": RunsCommand(f"touch '{marker}'"), "function": WritesMarker(marker)}


def save(obj: dict, path: str) -> str:
    """``obj`` written as the file type ``path`` names (see :data:`SUFFIXES`); ``path``."""
    path = str(path)
    if path.endswith(".pkl"):
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    elif path.endswith(".pth.tar"):
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(obj, path)
    return path


def write_checkpoint(path: str, extra, weights: dict = None) -> str:
    """A checkpoint of ``weights`` (default: one 2-vector) with ``extra`` stored next to them;
    numpy arrays in a ``.pkl`` (detectron2 weights), tensors otherwise."""
    weights = weights if weights is not None else {"w": torch.ones(2)}
    if str(path).endswith(".pkl"):
        model = {k: torch.as_tensor(v).numpy() for k, v in weights.items()}
        return save({"model": model, "__author__": "x", "extra": extra}, path)
    return save({"model": dict(weights), "extra": extra}, path)


def assert_nothing_ran(marker: str) -> None:
    """The payload never ran: ``marker`` does not exist."""
    assert not os.path.exists(marker), f"the hostile payload ran: {marker} exists"

