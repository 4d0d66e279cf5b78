"""Checks of pretrained weights: a frozen-feature probe of detector weights that needs no
fine-tune (``probe.py``, used by ``tools/probe_features.py`` and ``tools/sim_spectrum.py``), and
the evaluation of detector weights on a test set (``detector.py``, used by the pipeline).
Detection evaluators are detectron2's, chosen by the trainer (``soco_d2/engine/trainer.py``)."""
from .detector import evaluate_weights

__all__ = ["evaluate_weights"]
