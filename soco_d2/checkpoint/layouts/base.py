"""What a checkpoint layout is, the table of known layouts, and the ResNet renames they share.

A layout describes one way pretraining code saves its weights: how to recognise it
(:meth:`Layout.detect`), which detector parts it can provide (:attr:`Layout.groups`) and how each
of its keys becomes an exact key of a detectron2 ``GeneralizedRCNN`` (:meth:`Layout.map_key`).
A new checkpoint format is one new module in this package defining a :class:`Layout` subclass
decorated with :func:`register_layout`; the converter in ``soco_d2/checkpoint/convert.py`` never
changes.

Detector key names, per architecture (``arch``):

- ``"fpn"`` (``build_resnet_fpn_backbone`` + ``StandardROIHeads``): ``backbone.bottom_up.stem``,
  ``backbone.bottom_up.res2..res5``, ``backbone.fpn_lateral{2..5}(.norm)``,
  ``backbone.fpn_output{2..5}(.norm)``, ``roi_heads.box_head.conv1-4(.norm)/fc1``.
- ``"c4"`` (``build_resnet_backbone`` + ``Res5ROIHeads``): ``backbone.stem``,
  ``backbone.res2..res4``, and the last stage at ``roi_heads.res5``.
- ``"resnet"``: the ResNet alone under detectron2's names without a detector prefix
  (``stem.*``, ``res2..res5.*``), as facebookresearch/moco's detection converter writes them.
  Saved with ``matching_heuristics``, detectron2 loads them into C4 and FPN detectors alike (each
  detector key ending in ``.<name>`` takes it); only the backbone group has such names.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch

__all__ = [
    "ARCHS",
    "GROUPS",
    "Layout",
    "UnknownLayoutError",
    "get_layout",
    "has_torchvision_resnet",
    "is_torchvision_resnet_param",
    "layout_names",
    "place_resnet_key",
    "register_layout",
    "registered_layouts",
    "detectron2_to_torchvision",
    "torchvision_to_detectron2",
]

# The transferable groups, in the order a detector consumes them.
GROUPS = ("backbone", "fpn", "box_head")
# The detectors converted keys can be named for (see the module docstring).
ARCHS = ("fpn", "c4", "vitdet", "resnet")


class UnknownLayoutError(ValueError):
    """The checkpoint matches none of the known layouts (or more than one, or a bad name)."""


class Layout:
    """One checkpoint format. Subclass, set the class attributes, decorate with
    :func:`register_layout`.

    Attributes:
        name: the name on the command line (``--layout``) and in conversion reports.
        aliases: other accepted names (older spellings).
        groups: the groups of :data:`GROUPS` this format can provide at all.
        archs: the detector architectures :meth:`map_key` names keys for (a layout for
            another backbone family declares its own).
    """

    name: str = ""
    aliases: Tuple[str, ...] = ()
    groups: Tuple[str, ...] = ()
    archs: Tuple[str, ...] = ("fpn", "c4", "resnet")

    def detect(self, keys: Sequence[str]) -> bool:
        """True when a state dict with these keys is in this format.

        Detection must be exact: two layouts never both accept the same checkpoint (the
        converter refuses an ambiguous match rather than guess).
        """
        raise NotImplementedError

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        """``key`` -> ``(group, detectron2 key)`` for a detector of ``arch``, or None to drop it."""
        raise NotImplementedError

    def infer_arch(self, keys: Sequence[str]) -> str:
        """The detector to name keys for when the caller asks for ``arch="auto"``.

        A bare ResNet defaults to C4, the architecture of MoCo's detection protocol.
        """
        return "c4"

    def check_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Inspect the whole state dict before conversion (warn about inconsistencies)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, groups={self.groups})"


_REGISTRY: Dict[str, Layout] = {}


def register_layout(cls: Type[Layout]) -> Type[Layout]:
    """Class decorator: add one instance of ``cls`` to the table of layouts.

    Raises:
        ValueError: when the name or an alias is taken, or ``groups`` is not within GROUPS.
    """
    layout = cls()
    if not layout.name or not layout.groups or set(layout.groups) - set(GROUPS):
        raise ValueError(
            f"{cls.__name__}: a layout needs a name and groups within {GROUPS}, "
            f"got name={layout.name!r}, groups={layout.groups}"
        )
    taken = {n for lay in _REGISTRY.values() for n in (lay.name, *lay.aliases)}
    clash = {layout.name, *layout.aliases} & taken
    if clash:
        raise ValueError(f"{cls.__name__}: layout name(s) {sorted(clash)} already registered")
    _REGISTRY[layout.name] = layout
    return cls


def registered_layouts() -> Tuple[Layout, ...]:
    """Every registered layout, sorted by name (the order detection reports them in)."""
    return tuple(_REGISTRY[name] for name in sorted(_REGISTRY))


def layout_names(with_aliases: bool = True) -> List[str]:
    """Accepted ``--layout`` values, sorted."""
    names = []
    for lay in _REGISTRY.values():
        names += [lay.name, *(lay.aliases if with_aliases else ())]
    return sorted(names)


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (or with that alias).

    Raises:
        UnknownLayoutError: listing the known names.
    """
    for lay in _REGISTRY.values():
        if name == lay.name or name in lay.aliases:
            return lay
    raise UnknownLayoutError(f"unknown layout {name!r}; known: {layout_names()}")


# ---- ResNet names shared by the layouts ----------------------------------------------------

_STAGE_RE = re.compile(r"^(stem|res[2-5])\.")


def place_resnet_key(key: str, arch: str) -> Optional[str]:
    """Place a detectron2 ResNet key (``stem.*`` / ``resN.*``, no prefix) in a detector.

    Returns:
        ``backbone.bottom_up.<key>`` for FPN; for C4 ``roi_heads.<key>`` for res5 (detectron2's
        C4 detector runs the last stage in its ROI heads) and ``backbone.<key>`` otherwise;
        ``key`` itself for ``"resnet"``; None when ``key`` is not a ResNet stage key.
    """
    if _STAGE_RE.match(key) is None:
        return None
    if arch == "resnet":
        return key
    if arch == "fpn":
        return "backbone.bottom_up." + key
    return ("roi_heads." if key.startswith("res5.") else "backbone.") + key


def is_torchvision_resnet_param(key: str) -> bool:
    """True for a torchvision ResNet's stem (``conv1``, ``bn1``) and stage (``layerN``) keys;
    its classifier (``fc``) is never transferred."""
    return re.match(r"^(conv1|bn1|layer[1-4])\.", key) is not None


def torchvision_to_detectron2(key: str, arch: str) -> Optional[str]:
    """torchvision ResNet key (``layer1.0.bn1.weight``) -> detectron2 detector key.

    The renames: ``layerN`` -> ``res(N+1)``, stem ``conv1``/``bn1`` -> ``stem.conv1(.norm)``,
    ``bnK`` -> ``convK.norm``, ``downsample.0/1`` -> ``shortcut(.norm)``.

    Returns:
        the key placed by :func:`place_resnet_key`, or None for a non-ResNet key (``fc.*``).
    """
    if not is_torchvision_resnet_param(key):
        return None
    key = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", key)
    if not key.startswith("res"):
        key = "stem." + key
    key = re.sub(r"\bbn(\d)\b", r"conv\1.norm", key)
    key = key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return place_resnet_key(key, arch)


def detectron2_to_torchvision(key: str) -> Optional[str]:
    """detectron2 ResNet key without a prefix (``res2.0.conv1.norm.weight``) -> torchvision
    ResNet key (``layer1.0.bn1.weight``): the inverse of :func:`torchvision_to_detectron2`.

    Returns:
        None for a key that is not a stem or stage key.
    """
    if _STAGE_RE.match(key) is None:
        return None
    key = re.sub(r"^res(\d)", lambda m: f"layer{int(m.group(1)) - 1}", key)
    key = key.replace("stem.conv1.norm.", "bn1.").replace("stem.conv1.", "conv1.")
    key = key.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
    return re.sub(r"\bconv(\d)\.norm\.", r"bn\1.", key)


def has_torchvision_resnet(keys: Sequence[str], prefix: str = "") -> bool:
    """True when ``keys`` hold a torchvision ResNet under ``prefix``: its stem convolution
    ``<prefix>conv1.weight`` and first-stage keys ``<prefix>layer1.*``."""
    keys = set(keys)
    stage = prefix + "layer1."
    return prefix + "conv1.weight" in keys and any(k.startswith(stage) for k in keys)
