"""``soco_official``: checkpoints of the official SoCo code (hologerry/SoCo).

The online network lives under ``module.``: ``encoder`` is a torchvision-named ResNet, ``neck``
an mmcv-style FPN (``lateral_convs.i`` / ``fpn_convs.i``, each ``conv`` + ``bn``), ``head`` the
4conv1fc box head (``convK``, ``bnK``, ``fc1``). Momentum copies, projector and predictor are
dropped.
"""
import re
from typing import Optional, Sequence, Tuple

from .base import Layout, has_torchvision_resnet, register_layout, torchvision_to_detectron2

# the official FPN's first level is P2 (its neck is built on C2-C5)
_FPN_START = 2


@register_layout
class SocoOfficialLayout(Layout):
    name = "soco_official"
    groups = ("backbone", "fpn", "box_head")

    def detect(self, keys: Sequence[str]) -> bool:
        return has_torchvision_resnet(keys, "module.encoder.")

    def infer_arch(self, keys: Sequence[str]) -> str:
        return "fpn" if any(k.startswith("module.neck.") for k in keys) else "c4"

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        if key.startswith("module.encoder."):
            new = torchvision_to_detectron2(key[len("module.encoder.") :], arch)
            return None if new is None else ("backbone", new)
        if arch != "fpn":
            return None  # a C4 detector has neither FPN nor 4conv1fc head
        if key.startswith("module.neck."):
            m = re.match(
                r"^(lateral|fpn)_convs\.(\d+)\.(conv|bn)\.(.+)$", key[len("module.neck.") :]
            )
            if m is None:
                return None
            kind, idx, part, param = m.groups()
            name = f"fpn_{'lateral' if kind == 'lateral' else 'output'}{_FPN_START + int(idx)}"
            return "fpn", f"backbone.{name}{'.norm' if part == 'bn' else ''}.{param}"
        if key.startswith("module.head."):
            m = re.match(r"^(conv|bn|fc)(\d+)\.(.+)$", key[len("module.head.") :])
            if m is None:
                return None
            kind, idx, param = m.groups()
            name = {"conv": f"conv{idx}", "bn": f"conv{idx}.norm", "fc": f"fc{idx}"}[kind]
            return "box_head", f"roi_heads.box_head.{name}.{param}"
        return None
