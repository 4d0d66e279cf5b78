"""Data: pretraining datasets, proposals, views and mappers (one per method family), the
pretraining loader.

Importing this package registers soco_d2's builtin dataset names (``datasets.builtin``) and every
mapper (``dataset_mappers``); a method's own mapper is reached through
``build_dataset_mapper`` (``INPUT.DATASET_MAPPER_NAME``), not imported from here.
"""

from . import datasets  # noqa: F401  (registers the builtin dataset names)
from .build import build_pretrain_loader, get_pretrain_dataset_dicts
from .datasets import register_image_folder
from .dataset_mappers import DATASET_MAPPER_REGISTRY, build_dataset_mapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "build_dataset_mapper",
    "build_pretrain_loader",
    "get_pretrain_dataset_dicts",
    "register_image_folder",
]
