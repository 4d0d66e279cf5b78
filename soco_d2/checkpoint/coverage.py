"""Did ``MODEL.WEIGHTS`` initialise the detector's backbone? The check a fine-tune runs.

``DetectionCheckpointer`` loads whatever keys match and only logs the rest, so weights named for
another detector (C4 names in an FPN detector, a depth that differs) fine-tune from a random
backbone with no error. The Trainer (``soco_d2/engine/trainer.py``) loads ``MODEL.WEIGHTS``
through :class:`LoadRecordingCheckpointer`, which keeps what the load left out, and
:func:`check_backbone_loaded` stops the run before training when a backbone tensor stayed at its
initialisation, naming how many loaded and which did not.

The backbone is ``soco_d2.checkpoint.detector.detector_group``'s: ``backbone.bottom_up.*`` of
an FPN detector (not the FPN levels, which a backbone-only pretraining does not have),
``backbone.*`` and ``roi_heads.res5.*`` of a C4 detector (not the extra norm a C4 fine-tune
adds after res5), ``backbone.net.*`` of a ViTDet detector (not the simple feature pyramid).
Tensors that no pretraining has are never required: BatchNorm step counters and the
relative-position tables of ViTDet's attention (``attn.rel_pos_h`` / ``rel_pos_w``, which
ViTDet starts at zero). ``MODEL.SSL.ALLOW_PARTIAL_BACKBONE True`` turns the error into a
warning, for partial transfers made on purpose.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, List, Optional, Sequence, Tuple


from .checkpointer import RestrictedCheckpointer
from .detector import detector_group

__all__ = [
    "BackboneNotLoadedError",
    "LoadRecordingCheckpointer",
    "backbone_keys",
    "check_backbone_loaded",
    "check_loaded_weights",
]

logger = logging.getLogger(__name__)

# How many key names the error shows.
_SHOW = 8
# Backbone tensors no pretraining provides.
_NEVER_PRETRAINED = re.compile(r"(\.num_batches_tracked|\.attn\.rel_pos_[hw])$")


class BackboneNotLoadedError(RuntimeError):
    """``MODEL.WEIGHTS`` left backbone tensors of the detector at their initialisation."""


class LoadRecordingCheckpointer(RestrictedCheckpointer):
    """A ``DetectionCheckpointer`` that keeps the outcome of its last model load (and reads
    ``.pkl`` weights without running pickled code: :class:`~.checkpointer.RestrictedCheckpointer`).

    Attributes:
        last_incompatible: fvcore's ``_IncompatibleKeys`` (``missing_keys``,
            ``unexpected_keys``, ``incorrect_shapes``) of the last file loaded into the model;
            None before any (an empty path loads nothing).
    """

    last_incompatible = None

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible
        return incompatible


def backbone_keys(model_keys: Iterable[str]) -> List[str]:
    """The keys of ``model_keys`` that pretrained weights must provide (see module docstring)."""
    return [
        k for k in model_keys
        if detector_group(k) == "backbone" and not _NEVER_PRETRAINED.search(k)
    ]


def _sample(keys: Sequence[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def check_backbone_loaded(
    model_keys: Iterable[str],
    missing_keys: Iterable[str],
    weights: str,
    allow_partial: bool = False,
) -> Tuple[int, int]:
    """Check that a load initialised every backbone tensor of a detector.

    Args:
        model_keys: the detector's state-dict keys.
        missing_keys: the keys the load left at their initialisation (absent from the file, or
            of another shape): ``LoadRecordingCheckpointer.last_incompatible.missing_keys``.
        weights: the file that was loaded, for the message.
        allow_partial: warn instead of raising (``MODEL.SSL.ALLOW_PARTIAL_BACKBONE``).

    Returns:
        ``(loaded, total)`` backbone tensors.

    Raises:
        BackboneNotLoadedError: some backbone tensor was not loaded and ``allow_partial`` is
            False; the message names the counts and the keys.
    """
    required = backbone_keys(model_keys)
    missing = set(missing_keys)
    unloaded = [k for k in required if k in missing]
    loaded = len(required) - len(unloaded)
    if not unloaded:
        logger.info("MODEL.WEIGHTS %s initialised all %d backbone tensors", weights, loaded)
        return loaded, len(required)
    message = (
        f"MODEL.WEIGHTS {weights} initialised {loaded} of the detector's {len(required)} "
        f"backbone tensors; {len(unloaded)} stay at their initialisation: {_sample(unloaded)}"
    )
    if allow_partial:
        logger.warning("%s (MODEL.SSL.ALLOW_PARTIAL_BACKBONE is set: training anyway)", message)
        return loaded, len(required)
    raise BackboneNotLoadedError(
        f"{message}. The weights are probably named for another detector or depth: convert the "
        "pretraining checkpoint for this one (tools/convert_pretrained.py IN OUT, or with "
        "--config-file THIS_CONFIG to check it), or set MODEL.SSL.ALLOW_PARTIAL_BACKBONE True "
        "to fine-tune from a partial backbone on purpose."
    )


def check_loaded_weights(checkpointer: LoadRecordingCheckpointer, weights: str,
                         allow_partial: bool = False) -> Optional[Tuple[int, int]]:
    """:func:`check_backbone_loaded` for the last load of ``checkpointer``; None when it has
    loaded nothing."""
    incompatible = checkpointer.last_incompatible
    if incompatible is None:
        return None
    return check_backbone_loaded(
        checkpointer.model.state_dict().keys(), incompatible.missing_keys, weights, allow_partial
    )
