"""``soco_d2``: checkpoints this plugin saves for any ResNet pretraining method.

``DetectionCheckpointer`` saves ``{"model": state_dict, ...}``. The online network is named as in
``GeneralizedRCNN``, so transfer is a prefix filter plus moving ResNet stages between the FPN
and C4 placements:

- SoCo R-FPN: ``backbone.bottom_up.*``, ``backbone.fpn_*``, ``roi_heads.box_head.*``;
- SoCo R-C4: ``backbone.stem/res2-4.*`` and the last stage at ``roi_heads.res5.*``;
- ResNet methods without a neck (MoCo v2, DenseCL, DetCo): a plain detectron2 ResNet,
  ``backbone.stem.*``, ``backbone.res2..res5.*``.

Everything else (the EMA copy ``target.*``, projectors, predictors, method heads, queues) is
dropped. Detection looks for detectron2 ResNet names only, so checkpoints of other backbones
(a ViT at ``backbone.net.*``) are left to their own layout module.
"""
import re
from typing import Optional, Sequence, Tuple

from .base import Layout, place_resnet_key, register_layout

_RESNET_RE = re.compile(r"^backbone\.(bottom_up\.)?(stem|res[2-5])\.")


@register_layout
class PluginResNetLayout(Layout):
    """This plugin's own checkpoints of every ResNet method (see the module docstring)."""

    name = "soco_d2"
    groups = ("backbone", "fpn", "box_head")

    def detect(self, keys: Sequence[str]) -> bool:
        return any(_RESNET_RE.match(k) for k in keys)

    def infer_arch(self, keys: Sequence[str]) -> str:
        fpn = any(k.startswith(("backbone.bottom_up.", "backbone.fpn_")) for k in keys)
        return "fpn" if fpn else "c4"

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        m = _RESNET_RE.match(key)
        if m is not None:  # stem or stage, in the FPN or the C4 placement
            new = place_resnet_key(key[len("backbone.") + len(m.group(1) or "") :], arch)
            return "backbone", new
        if key.startswith("roi_heads.res5."):
            # the C4 head is the last ResNet stage: an FPN detector holds it in its bottom-up path
            return "backbone", place_resnet_key(key[len("roi_heads.") :], arch)
        if key.startswith(("backbone.fpn_", "backbone.top_block.")):
            return ("fpn", key) if arch == "fpn" else None
        if key.startswith("roi_heads.box_head."):
            return ("box_head", key) if arch == "fpn" else None
        return None
