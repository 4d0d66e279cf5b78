"""detectron2's ``DetectionCheckpointer`` with the restricted reading of ``.pkl`` weights.

detectron2 reads a ``.pkl`` given as ``MODEL.WEIGHTS`` (or to ``load``) with unrestricted
``pickle.load``, so a downloaded file could run code the moment a fine-tune or an evaluation
starts. :class:`RestrictedCheckpointer` reads it through :func:`~.load.read_checkpoint` instead
(numpy arrays and plain containers; :class:`~.load.UntrustedCheckpointError` otherwise) and then
interprets it as detectron2 does: detectron2 model-zoo files as they are, Detectron / Caffe2
files (``blobs``, ``*_momentum`` dropped) through the name-matching heuristics. Every other file
(``.pth`` checkpoints, resuming) goes to detectron2, whose ``torch.load`` is weights-only.
"""
from typing import Any, Dict

from detectron2.checkpoint import DetectionCheckpointer

from .load import read_checkpoint

__all__ = ["RestrictedCheckpointer"]


class RestrictedCheckpointer(DetectionCheckpointer):
    """A ``DetectionCheckpointer`` that reads ``.pkl`` files without running pickled code.

    Args:
        *args, **kwargs: those of ``DetectionCheckpointer`` (model, save_dir, trainer=...).
        trust_pickle: read ``.pkl`` files with detectron2's unrestricted unpickling
            (``--trust-pickle`` on the command lines); only for files from a trusted source.
    """

    def __init__(self, *args, trust_pickle: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.trust_pickle = trust_pickle

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if self.trust_pickle or not filename.endswith(".pkl"):
            return super()._load_file(filename)
        data = read_checkpoint(filename)  # raises UntrustedCheckpointError, nothing run
        if not isinstance(data, dict):
            raise ValueError(f"{filename}: a .pkl of weights holds a dict, not {type(data)}")
        if "model" in data and "__author__" in data:  # detectron2's own format
            self.logger.info("Reading a file from '%s'", data["__author__"])
            return data
        blobs = data.get("blobs", data)  # Detectron detection models keep theirs under "blobs"
        model = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}
