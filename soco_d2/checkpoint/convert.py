"""Convert pretraining checkpoints into detectron2 detector weights.

One generic converter over the table of layouts in ``soco_d2/checkpoint/layouts/``: detect the
layout of a state dict (or take it by name), rename every key the layout maps into an exact
detectron2 key of a ``GeneralizedRCNN`` (so a missing-key check after loading is exact), and
report per group (:data:`GROUPS`) what was converted.

The FPN transfer keeps backbone + FPN + box head; the C4 transfer keeps the ResNet, whose last
stage lives at ``roi_heads.res5`` in a detectron2 C4 detector.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from soco_d2.utils.io import atomic_write

from .layouts import (
    GROUPS,
    Layout,
    UnknownLayoutError,
    get_layout,
    registered_layouts,
)
from .load import load_state_dict

__all__ = [
    "GROUPS",
    "LAYOUTS",
    "ConversionResult",
    "UnknownLayoutError",
    "check_groups",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_layout",
    "format_counts",
    "parse_groups",
    "save_detectron2_weights",
]

logger = logging.getLogger(__name__)

# Group statuses in ConversionResult.status (the first is followed by the tensor count).
CONVERTED, NOT_PRETRAINED, NOT_TRANSFERRED = "converted", "not pretrained", "not transferred"


def __getattr__(name: str):
    # LAYOUTS is a view of the registry, so layouts registered after this import appear in it.
    if name == "LAYOUTS":
        return registered_layouts()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class ConversionResult:
    """Converted weights.

    Attributes:
        model: detectron2 key -> numpy array.
        counts: tensors converted per group, for every group of :data:`GROUPS`.
        layout: name of the layout the input was read as.
        arch: ``"fpn"``, ``"c4"``, ``"vitdet"`` or ``"resnet"``, the detector the keys are named
            for (``"resnet"``: any ResNet detector, through detectron2's matching heuristics).
        dropped: input keys not transferred (target, projector, predictor, fc, ...).
        status: per group of :data:`GROUPS`: ``"converted N"``, ``"not pretrained"`` (the layout
            cannot provide it, or provided 0 tensors) or ``"not transferred"`` (left out by
            ``groups``).
        layout_groups: the groups the layout can provide at all.
    """

    model: Dict[str, np.ndarray]
    counts: Dict[str, int]
    layout: str
    arch: str
    dropped: List[str] = field(default_factory=list)
    status: Dict[str, str] = field(default_factory=dict)
    layout_groups: Tuple[str, ...] = GROUPS


def check_groups(groups: Sequence[str]) -> List[str]:
    """``groups`` as a list if it is a non-empty subset of :data:`GROUPS`, else ValueError."""
    if not groups or set(groups) - set(GROUPS):
        raise ValueError(f"groups must be a non-empty subset of {GROUPS}, got {tuple(groups)}")
    return list(groups)


def parse_groups(text: str) -> List[str]:
    """``"backbone, fpn"`` -> ``["backbone", "fpn"]``, checked by :func:`check_groups`."""
    return check_groups([g.strip() for g in text.split(",") if g.strip()])


def detect_layout(keys) -> Layout:
    """Return the one layout that accepts a state dict with these keys.

    Raises:
        UnknownLayoutError: with a sample of the keys when no layout matches, or naming the
            candidates when several do (pass the layout by name then).
    """
    keys = list(keys)
    found = [lay for lay in registered_layouts() if lay.detect(keys)]
    if len(found) == 1:
        return found[0]
    sample = ", ".join(sorted(keys)[:8]) or "<empty>"
    if found:
        raise UnknownLayoutError(
            f"ambiguous checkpoint layout: {[lay.name for lay in found]} all accept it; choose "
            f"one with layout= (--layout). First keys: {sample}"
        )
    known = ", ".join(lay.name for lay in registered_layouts())
    raise UnknownLayoutError(
        f"unknown checkpoint layout: no known layout accepts these keys. Known layouts: {known}."
        f" First keys: {sample}"
    )


def _group_status(group: str, count: int, groups: Sequence[str]) -> str:
    if group not in groups:
        return NOT_TRANSFERRED
    return f"{CONVERTED} {count}" if count else NOT_PRETRAINED


def convert_state_dict(
    state: Mapping[str, torch.Tensor],
    layout: Optional[str] = None,
    arch: str = "auto",
    groups: Sequence[str] = GROUPS,
) -> ConversionResult:
    """Rename the transferable tensors of a pretraining state dict into detectron2 keys.

    Args:
        state: input state dict (name -> tensor or array).
        layout: a layout name (see ``soco_d2.checkpoint.layout_names()``), or None to detect it.
        arch: ``"fpn"``, ``"c4"``, ``"resnet"`` (backbone only, names without a detector
            prefix, for C4 and FPN detectors alike) or ``"auto"`` (the layout decides: FPN when
            the input has FPN keys, else C4; pass the fine-tuning detector's architecture, see
            ``infer_arch``).
        groups: the groups of :data:`GROUPS` to transfer; tensors of the others are dropped
            (e.g. ``("backbone", "fpn")`` leaves the box head randomly initialised).

    Returns:
        the converted weights, with per-group counts and statuses.

    Raises:
        UnknownLayoutError: unknown or ambiguous layout, or nothing transferable.
        ValueError: bad ``arch`` or ``groups``; two input keys mapping to one detector key.
    """
    check_groups(groups)
    keys = list(state.keys())
    lay = detect_layout(keys) if layout is None else get_layout(layout)
    if arch == "auto":
        arch = lay.infer_arch(keys)
    elif arch not in lay.archs:
        raise ValueError(
            f"arch must be 'auto' or one of {lay.archs} for layout {lay.name}, got {arch!r}"
        )
    lay.check_state(state)
    model: Dict[str, np.ndarray] = {}
    counts = {g: 0 for g in GROUPS}
    dropped = []
    for key in keys:
        mapped = lay.map_key(key, arch)
        if mapped is None or mapped[0] not in groups:
            dropped.append(key)
            continue
        group, new_key = mapped
        if new_key in model:
            raise ValueError(f"two input keys map to {new_key!r} (layout {lay.name})")
        model[new_key] = torch.as_tensor(state[key]).detach().cpu().numpy()
        counts[group] += 1
    if not model:
        raise UnknownLayoutError(
            f"layout {lay.name} matched but no tensor is transferable for arch {arch} "
            f"and groups {tuple(groups)}"
        )
    status = {g: _group_status(g, counts[g], groups) for g in GROUPS}
    return ConversionResult(
        model=model,
        counts=counts,
        layout=lay.name,
        arch=arch,
        dropped=dropped,
        status=status,
        layout_groups=tuple(lay.groups),
    )


def _top_level(key: str) -> str:
    wrapper = "module." if key.startswith("module.") else ""
    head, dot, _ = key[len(wrapper) :].partition(".")
    return wrapper + head + (".*" if dot else "")


def format_counts(result: ConversionResult) -> List[str]:
    """One line per group (and one for the dropped keys), as the converter CLI prints them.

    Example for a MoCo checkpoint (last line cut short)::

        backbone    318 tensors
        fpn        not pretrained (moco_official has backbone only)
        box_head   not pretrained (moco_official has backbone only)
        dropped     328 tensors (module.encoder_k.*, module.encoder_q.*, module.queue, ...
    """
    lines = []
    for group in GROUPS:
        status = result.status.get(group) or _group_status(group, result.counts[group], GROUPS)
        if status.startswith(CONVERTED):
            lines.append(f"{group:<10} {result.counts[group]:4d} tensors")
            continue
        if status == NOT_TRANSFERRED:
            why = "left out by groups"
        elif group not in result.layout_groups:
            why = f"{result.layout} has {', '.join(result.layout_groups)} only"
        elif result.arch == "c4" and group != "backbone":
            why = f"a c4 detector has no {group}"
        elif result.arch == "resnet" and group != "backbone":
            why = "arch resnet names the backbone only"
        else:
            why = "0 tensors in the checkpoint"
        lines.append(f"{group:<10} {status} ({why})")
    # what was dropped, by top-level name ("target.*", "fc.*", "queue"); a DataParallel
    # "module." wrapper is looked through
    parts = sorted({_top_level(k) for k in result.dropped})
    more = ", ..." if len(parts) > 6 else ""
    what = f" ({', '.join(parts[:6])}{more})" if parts else ""
    lines.append(f"{'dropped':<10} {len(result.dropped):4d} tensors{what}")
    return lines


def save_detectron2_weights(result: ConversionResult, path: str) -> None:
    """Write ``{"model", "__author__", "matching_heuristics"}`` as a pickle, atomically."""
    out = {"model": result.model, "__author__": "soco_d2", "matching_heuristics": True}
    with atomic_write(path, "wb") as f:
        pickle.dump(out, f)


def convert_checkpoint(
    src: str,
    dst: str,
    layout: Optional[str] = None,
    arch: str = "auto",
    groups: Sequence[str] = GROUPS,
    trust_pickle: bool = False,
) -> ConversionResult:
    """Convert the checkpoint file ``src`` into detectron2 weights at ``dst`` (.pkl).

    ``layout``, ``arch`` and ``groups`` are those of :func:`convert_state_dict`; ``trust_pickle``
    is that of :func:`~.load.read_checkpoint`.
    """
    state = load_state_dict(src, trust_pickle=trust_pickle)
    result = convert_state_dict(state, layout=layout, arch=arch, groups=groups)
    save_detectron2_weights(result, dst)
    logger.info(
        "converted %s (%s layout, %s): %s -> %s",
        src,
        result.layout,
        result.arch,
        ", ".join(f"{g} {s}" for g, s in result.status.items()),
        dst,
    )
    return result
