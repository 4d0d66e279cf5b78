"""Convert pretraining checkpoints into detectron2 detector weights.

One converter with a table of known layouts (:data:`LAYOUTS`). Each layout says how to recognise
a state dict and how to rename one of its keys into an exact detectron2 key of a
``GeneralizedRCNN`` (so a missing-key check after loading is exact). Adding a layout is adding
a table entry.

Known layouts:

- ``soco_d2``: what :class:`DetectionCheckpointer` saves for a soco_d2 pretraining run
  (online ``backbone.*``, ``roi_heads.box_head.*`` / ``roi_heads.res5.*``; ``target.*``,
  ``projector.*``, ``predictor.*`` are dropped). Conversion is a prefix filter.
- ``soco_official``: hologerry/SoCo checkpoints (``module.encoder.*`` torchvision-style ResNet,
  ``module.neck.*`` mmcv FPN, ``module.head.*`` 4conv1fc head).
- ``moco``: MoCo-style ResNet checkpoints (``module.encoder_q.*``, torchvision names).

The FPN transfer keeps backbone + FPN + box head; the C4 transfer keeps the ResNet, whose last
stage lives at ``roi_heads.res5`` in a detectron2 C4 detector (the stage the official C4
converter also keeps, as ``res5``).
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "GROUPS",
    "ConversionResult",
    "Layout",
    "LAYOUTS",
    "UnknownLayoutError",
    "check_groups",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_layout",
    "load_state_dict",
    "parse_groups",
    "save_detectron2_weights",
]

logger = logging.getLogger(__name__)

# The transferable groups, in the order a detector consumes them.
GROUPS = ("backbone", "fpn", "box_head")


class UnknownLayoutError(ValueError):
    """The checkpoint matches none of the known layouts."""


@dataclass
class ConversionResult:
    """Converted weights.

    Attributes:
        model: detectron2 key -> numpy array.
        counts: tensors converted per group (``backbone``, ``fpn``, ``box_head``).
        layout: name of the layout the input was read as.
        arch: ``"fpn"`` or ``"c4"``, the detector the keys are named for.
        dropped: input keys not transferred (target, projector, predictor, fc, ...).
    """

    model: Dict[str, np.ndarray]
    counts: Dict[str, int]
    layout: str
    arch: str
    dropped: List[str] = field(default_factory=list)


# A key mapper returns (group, detectron2 key) or None to drop the key.
KeyMapper = Callable[[str, str], Optional[Tuple[str, str]]]


@dataclass(frozen=True)
class Layout:
    """One known checkpoint layout.

    Attributes:
        name: short name used on the command line (``--layout``).
        marker: a key prefix whose presence identifies the layout.
        default_arch: detector the keys map to when ``arch="auto"`` finds no FPN keys.
        map_key: ``(key, arch) -> (group, detectron2 key) | None``.
    """

    name: str
    marker: str
    default_arch: str
    map_key: KeyMapper


def _resnet_key(key: str, arch: str) -> str:
    """torchvision ResNet name (``layer1.0.bn1.weight``) -> detectron2 ResNet key."""
    key = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", key)
    if not key.startswith("res"):
        key = "stem." + key
    key = re.sub(r"\bbn(\d)\b", r"conv\1.norm", key)
    key = key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    if arch == "c4":
        # detectron2's C4 detector holds res5 in the ROI heads, the rest directly in backbone.
        return ("roi_heads." if key.startswith("res5.") else "backbone.") + key
    return "backbone.bottom_up." + key


def _is_resnet_param(key: str) -> bool:
    # conv1/bn1 of the stem and every layerN.*; fc/avgpool heads are not transferred.
    return key.startswith("layer") or re.match(r"^(conv1|bn1)\.", key) is not None


def _map_soco_d2(key: str, arch: str) -> Optional[Tuple[str, str]]:
    if key.startswith("backbone.fpn_") or key.startswith("backbone.top_block."):
        return ("fpn", key) if arch == "fpn" else None
    if key.startswith("backbone."):
        return "backbone", key
    if key.startswith("roi_heads.box_head."):
        return ("box_head", key) if arch == "fpn" else None
    if key.startswith("roi_heads.res5."):
        # the C4 "head" is the last ResNet stage: it belongs to the pretrained backbone.
        return ("backbone", key) if arch == "c4" else None
    return None  # target.*, projector.*, predictor.*, anything else


def _map_soco_official(key: str, arch: str, fpn_start: int = 2) -> Optional[Tuple[str, str]]:
    if key.startswith("module.encoder."):
        sub = key[len("module.encoder.") :]
        return ("backbone", _resnet_key(sub, arch)) if _is_resnet_param(sub) else None
    if key.startswith("module.neck."):
        m = re.match(r"^(lateral|fpn)_convs\.(\d+)\.(conv|bn)\.(.+)$", key[len("module.neck.") :])
        if m is None or arch != "fpn":
            return None
        kind, idx, part, param = m.groups()
        name = f"fpn_{'lateral' if kind == 'lateral' else 'output'}{fpn_start + int(idx)}"
        return "fpn", f"backbone.{name}{'.norm' if part == 'bn' else ''}.{param}"
    if key.startswith("module.head."):
        sub = key[len("module.head.") :]
        m = re.match(r"^(conv|bn|fc)(\d+)\.(.+)$", sub)
        if m is None or arch != "fpn":
            return None
        kind, idx, param = m.groups()
        name = {"conv": f"conv{idx}", "bn": f"conv{idx}.norm", "fc": f"fc{idx}"}[kind]
        return "box_head", f"roi_heads.box_head.{name}.{param}"
    return None


def _map_moco(key: str, arch: str) -> Optional[Tuple[str, str]]:
    if not key.startswith("module.encoder_q."):
        return None  # encoder_k, queue, ...
    sub = key[len("module.encoder_q.") :]
    return ("backbone", _resnet_key(sub, arch)) if _is_resnet_param(sub) else None


# Checked in order; the first whose marker prefixes some key wins.
LAYOUTS: Tuple[Layout, ...] = (
    Layout("soco_official", "module.encoder.", "c4", _map_soco_official),
    Layout("moco", "module.encoder_q.", "c4", _map_moco),
    Layout("soco_d2", "backbone.", "c4", _map_soco_d2),
)


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file and return its model state dict.

    Accepts ``.pth``/``.pt`` (torch) and ``.pkl`` (pickle) files holding a state dict directly
    or under ``"model"`` (detectron2, official SoCo) or ``"state_dict"`` (MoCo).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    for nest in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(nest), Mapping):
            obj = obj[nest]
            break
    if not isinstance(obj, Mapping):
        raise UnknownLayoutError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k: torch.as_tensor(v) for k, v in obj.items()}


def detect_layout(keys) -> Layout:
    """Return the layout of a state dict, given its keys.

    Raises:
        UnknownLayoutError: with a sample of the keys, when no layout matches.
    """
    keys = list(keys)
    for layout in LAYOUTS:
        if any(k.startswith(layout.marker) for k in keys):
            return layout
    sample = ", ".join(sorted(keys)[:8]) or "<empty>"
    known = ", ".join(f"{lay.name} ({lay.marker}*)" for lay in LAYOUTS)
    raise UnknownLayoutError(
        f"unknown checkpoint layout: no key starts with any known prefix. Known layouts: {known}."
        f" First keys: {sample}"
    )


def _resolve_arch(keys: List[str], layout: Layout, arch: str) -> str:
    if arch in ("fpn", "c4"):
        return arch
    if arch != "auto":
        raise ValueError(f"arch must be 'auto', 'fpn' or 'c4', got {arch!r}")
    fpn_markers = ("backbone.fpn_", "module.neck.", "backbone.bottom_up.")
    return "fpn" if any(k.startswith(fpn_markers) for k in keys) else layout.default_arch


def check_groups(groups: Sequence[str]) -> List[str]:
    """``groups`` as a list if it is a non-empty subset of :data:`GROUPS`, else ValueError."""
    if not groups or set(groups) - set(GROUPS):
        raise ValueError(f"groups must be a non-empty subset of {GROUPS}, got {tuple(groups)}")
    return list(groups)


def parse_groups(text: str) -> List[str]:
    """``"backbone, fpn"`` -> ``["backbone", "fpn"]``, checked by :func:`check_groups`."""
    return check_groups([g.strip() for g in text.split(",") if g.strip()])


def convert_state_dict(
    state: Mapping[str, torch.Tensor],
    layout: Optional[str] = None,
    arch: str = "auto",
    groups: Sequence[str] = GROUPS,
) -> ConversionResult:
    """Rename the transferable tensors of a pretraining state dict into detectron2 keys.

    Args:
        state: input state dict (name -> tensor or array).
        layout: a name from :data:`LAYOUTS`, or None to detect it.
        arch: ``"fpn"``, ``"c4"`` or ``"auto"`` (FPN when the input has FPN keys).
        groups: the groups of :data:`GROUPS` to transfer; tensors of the others are dropped
            (e.g. ``("backbone", "fpn")`` leaves the box head randomly initialised).

    Returns:
        the converted weights, with per-group counts (0 for a group not transferred).
    """
    check_groups(groups)
    keys = list(state.keys())
    if layout is None:
        lay = detect_layout(keys)
    else:
        by_name = {lay.name: lay for lay in LAYOUTS}
        if layout not in by_name:
            raise UnknownLayoutError(f"unknown layout {layout!r}; known: {sorted(by_name)}")
        lay = by_name[layout]
    arch = _resolve_arch(keys, lay, arch)
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
    return ConversionResult(model=model, counts=counts, layout=lay.name, arch=arch, dropped=dropped)


def save_detectron2_weights(result: ConversionResult, path: str) -> None:
    """Write ``{"model", "__author__", "matching_heuristics"}`` as a pickle, atomically."""
    out = {"model": result.model, "__author__": "soco_d2", "matching_heuristics": True}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(out, f)
    os.replace(tmp, path)


def convert_checkpoint(
    src: str,
    dst: str,
    layout: Optional[str] = None,
    arch: str = "auto",
    groups: Sequence[str] = GROUPS,
) -> ConversionResult:
    """Convert the checkpoint file ``src`` into detectron2 weights at ``dst`` (.pkl).

    Arguments after ``dst`` are those of :func:`convert_state_dict`.
    """
    result = convert_state_dict(load_state_dict(src), layout=layout, arch=arch, groups=groups)
    save_detectron2_weights(result, dst)
    logger.info(
        "converted %s (%s layout, %s): %s -> %s",
        src,
        result.layout,
        result.arch,
        ", ".join(f"{g} {n}" for g, n in result.counts.items()),
        dst,
    )
    return result
