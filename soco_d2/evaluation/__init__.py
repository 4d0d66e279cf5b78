"""Checks of pretrained weights that need no fine-tune: a frozen-feature probe of detector weights
(``probe.py``, used by ``tools/probe_features.py`` and ``tools/sim_spectrum.py``). Detection
evaluators are detectron2's, chosen by the trainer (``soco_d2/engine/trainer.py``)."""
