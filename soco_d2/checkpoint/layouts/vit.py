"""ViT checkpoint layouts for ViTDet fine-tuning (detector keys ``backbone.net.*``).

Three formats, each keeping the encoder's patch embedding, position table and blocks, whose
names already match detectron2's ViT (``patch_embed.proj``, ``pos_embed``, ``blocks.N.norm1``,
``.attn.qkv``, ``.attn.proj``, ``.norm2``, ``.mlp.fc1``, ``.mlp.fc2``):

- ``vit_d2``: this plugin's checkpoints of ViT methods (SIM: ``backbone.net.*``, its EMA copy
  under ``target.*``) and ViTDet detectors; ``backbone.net.*`` kept as is.
- ``sim_official``: OpenGVLab/Siamese-Image-Modeling ``{model, optimizer, epoch, scaler, args}``;
  the encoder is bare (``blocks.N.*``); the momentum copies (``mm_*``), ``decoder_*``,
  ``mask_token``, projector/predictor blocks and ``teacher_norm`` are dropped.
- ``mae``: MAE-layout encoders (facebookresearch/mae, timm ViTs): ``blocks.N.*``,
  ``patch_embed.proj.*``, ``pos_embed`` kept; ``cls_token``, the final ``norm`` / ``fc_norm``,
  ``head`` and any MAE decoder dropped (ViTDet's ViT has neither a cls token nor a final norm).

Every layout names its keys for the ``"vitdet"`` detector only (arch ``"auto"`` picks it).
What a converted ViT leaves at initialisation in ViTDet is the relative-position tables
(``attn.rel_pos_h`` / ``rel_pos_w``, zero-initialised, as detectron2's ViTDet starts them),
the pyramid and the heads.

The official SIM checkpoint pickles an ``argparse.Namespace`` (``args``), which
``torch.load(weights_only=True)`` refuses. :func:`load_sim_official` reads it with only that
class added to the weights-only allow-list: rebuilding a Namespace sets attributes on a plain
object and runs no code, and every value inside is still restricted to tensors, containers and
plain values, so the file is read without executing arbitrary pickled code.
"""
import argparse
import re
from typing import Dict, Optional, Sequence, Tuple

import torch

from .base import Layout, register_layout

__all__ = ["VIT_ARCH", "ViTD2Layout", "SIMOfficialLayout", "MAELayout", "load_sim_official",
           "vit_encoder_key"]

# The detector architecture these layouts name keys for.
VIT_ARCH = "vitdet"

_ENCODER_RE = re.compile(r"^(patch_embed\.proj\.(weight|bias)|pos_embed|blocks\.\d+\..+)$")
_SIM_MARKERS = ("mm_blocks.", "mm_patch_embed.", "decoder_pos_mlp.", "predictor_decoder_blocks.")


def vit_encoder_key(key: str) -> Optional[str]:
    """A bare ViT encoder key (``blocks.0.attn.qkv.weight``) -> ViTDet's
    ``backbone.net.blocks.0.attn.qkv.weight``; None for keys ViTDet has no place for."""
    return "backbone.net." + key if _ENCODER_RE.match(key) else None


def _has_bare_vit(keys: Sequence[str]) -> bool:
    keys = set(keys)
    return "patch_embed.proj.weight" in keys and any(k.startswith("blocks.0.") for k in keys)


class _ViTLayout(Layout):
    groups = ("backbone",)
    archs = (VIT_ARCH,)

    def infer_arch(self, keys: Sequence[str]) -> str:
        return VIT_ARCH


@register_layout
class ViTD2Layout(_ViTLayout):
    name = "vit_d2"
    aliases = ("sim_d2",)

    def detect(self, keys: Sequence[str]) -> bool:
        return any(k.startswith("backbone.net.blocks.") for k in keys)

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        if arch != VIT_ARCH or not key.startswith("backbone.net."):
            return None
        # rel-pos tables only exist in detector checkpoints; keep them when they are there
        new = vit_encoder_key(key[len("backbone.net.") :])
        return None if new is None else ("backbone", new)


@register_layout
class SIMOfficialLayout(_ViTLayout):
    name = "sim_official"
    aliases = ("sim",)

    def detect(self, keys: Sequence[str]) -> bool:
        return _has_bare_vit(keys) and any(k.startswith(_SIM_MARKERS) for k in keys)

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        new = vit_encoder_key(key) if arch == VIT_ARCH else None
        return None if new is None else ("backbone", new)


@register_layout
class MAELayout(_ViTLayout):
    name = "mae"
    aliases = ("timm_vit",)

    def detect(self, keys: Sequence[str]) -> bool:
        return _has_bare_vit(keys) and not any(k.startswith(_SIM_MARKERS) for k in keys)

    def map_key(self, key: str, arch: str) -> Optional[Tuple[str, str]]:
        new = vit_encoder_key(key) if arch == VIT_ARCH else None
        return None if new is None else ("backbone", new)


def load_sim_official(path: str) -> Dict[str, torch.Tensor]:
    """The ``model`` state dict of an official SIM checkpoint, read weights-only.

    Args:
        path: ``checkpoint-*.pth`` of OpenGVLab/Siamese-Image-Modeling.

    Returns:
        key -> tensor (the whole ``model`` entry; convert with layout ``sim_official``).

    Raises:
        KeyError: when the file has no ``model`` entry.
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or "model" not in obj:
        raise KeyError(f"{path}: expected an official SIM checkpoint with a 'model' entry")
    return dict(obj["model"])
