"""``densecl_official``: full DenseCL training checkpoints (WXinlong/DenseCL, mmcv runner).

``{"meta", "state_dict", "optimizer"}`` whose state dict holds the queues (``queue``,
``queue_ptr``, ``queue2``, ``queue2_ptr``), the query network ``encoder_q.0.*`` (a
torchvision-named ResNet) and ``encoder_q.1.*`` (its neck), the key network ``encoder_k.*``, and
``backbone.*``: the query ResNet stored a second time under torchvision names. The ResNet is
taken from ``encoder_q.0``; the ``backbone.*`` copy is only compared with it.

DenseCL's own extract step writes the bare ResNet instead (``{"state_dict": <torchvision
names>, "author": "DenseCL"}``), which the ``torchvision`` layout reads.
"""
import logging
from typing import Mapping, Optional, Sequence, Tuple

import torch

from .base import Layout, has_torchvision_resnet, register_layout, torchvision_to_detectron2

logger = logging.getLogger(__name__)

_PREFIX = "encoder_q.0."
_COPY = "backbone."


@register_layout
class DenseclOfficialLayout(Layout):
    name = "densecl_official"
    groups = ("backbone",)

    def detect(self, keys: Sequence[str]) -> bool:
        return has_torchvision_resnet(keys, _PREFIX)

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        if not key.startswith(_PREFIX):
            return None  # neck, key encoder, queues and the backbone.* copy
        new = torchvision_to_detectron2(key[len(_PREFIX) :], arch)
        return None if new is None else ("backbone", new)

    def check_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Warn when the ``backbone.*`` copy is not the query ResNet (encoder_q.0 is used)."""
        query = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
        copy = {k[len(_COPY) :]: v for k, v in state.items() if k.startswith(_COPY)}
        if not copy:
            return
        differ = sorted(set(query) ^ set(copy))
        differ += sorted(
            k
            for k in set(query) & set(copy)
            if torch.as_tensor(query[k]).shape != torch.as_tensor(copy[k]).shape
            or not torch.equal(torch.as_tensor(query[k]), torch.as_tensor(copy[k]))
        )
        if differ:
            logger.warning(
                "densecl_official: the backbone.* copy differs from encoder_q.0.* in %d keys "
                "(first: %s); converting encoder_q.0.*, the query encoder",
                len(differ),
                ", ".join(differ[:4]),
            )
