"""``moco_official``: MoCo v1/v2 checkpoints (facebookresearch/moco ``main_moco.py``).

``{"state_dict": ..., "arch", "epoch", "optimizer"}`` from a DistributedDataParallel model: the
query encoder is ``module.encoder_q.*`` with torchvision ResNet names (its ``fc`` is the MLP
head); ``module.encoder_k.*`` and ``module.queue*`` are dropped. The same renames as
facebookresearch/moco ``detection/convert-pretrain-to-detectron2.py``.
"""
from typing import Optional, Sequence, Tuple

from .base import Layout, has_torchvision_resnet, register_layout, torchvision_to_detectron2

_PREFIX = "module.encoder_q."


@register_layout
class MocoOfficialLayout(Layout):
    name = "moco_official"
    aliases = ("moco",)
    groups = ("backbone",)

    def detect(self, keys: Sequence[str]) -> bool:
        return has_torchvision_resnet(keys, _PREFIX)

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        if not key.startswith(_PREFIX):
            return None
        new = torchvision_to_detectron2(key[len(_PREFIX) :], arch)
        return None if new is None else ("backbone", new)
