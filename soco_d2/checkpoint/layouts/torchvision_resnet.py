"""``torchvision``: a bare torchvision ResNet state dict (``conv1.weight``, ``bn1.*``,
``layer1.0.conv1.weight``, ...; a classifier ``fc.*`` is dropped).

Found at the top level or under ``state_dict`` (the loader unwraps it). This is what
torchvision's supervised weights hold, what DenseCL's extract step writes
(``{"state_dict": ..., "author": "DenseCL"}``), and what the released DetCo weights hold: the
detection converter in xieenze/DetCo (``benchmarks/detection/convert-pretrain-to-detectron2.py``)
reads ``obj["state_dict"]`` and renames its bare torchvision keys, with no module prefix.
"""
from typing import Optional, Sequence, Tuple

from .base import Layout, has_torchvision_resnet, register_layout, torchvision_to_detectron2


@register_layout
class TorchvisionResnetLayout(Layout):
    name = "torchvision"
    groups = ("backbone",)

    def detect(self, keys: Sequence[str]) -> bool:
        return has_torchvision_resnet(keys)

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        new = torchvision_to_detectron2(key, arch)
        return None if new is None else ("backbone", new)
