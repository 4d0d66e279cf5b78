"""Data: proposals, pretraining datasets, SoCo views and mapper, the pretraining loader.

Importing this package registers the pretraining datasets (``datasets.PRETRAIN_BUILTIN``) and
the fine-tuning datasets of ``register``.
"""

from . import datasets  # noqa: F401  (registers the builtin pretraining datasets)
from . import register  # noqa: F401  (registers the demo / mini-COCO fine-tuning datasets)
from .build import build_soco_pretrain_loader, get_pretrain_dataset_dicts
from .datasets import register_image_folder
from .mapper import SoCoDatasetMapper

__all__ = [
    "SoCoDatasetMapper",
    "build_soco_pretrain_loader",
    "get_pretrain_dataset_dicts",
    "register_image_folder",
]
