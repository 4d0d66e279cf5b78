"""The dataset names soco_d2 adds to detectron2's builtins.

All paths are relative to ``os.getenv("DETECTRON2_DATASETS", "datasets")`` (see
``datasets/README.md`` for the trees). Registration is lazy: nothing is read until a dataset is
used, so missing data only fails when it is needed. ``register_builtin`` runs when
``soco_d2`` is imported and again from ``register_from_cfg``, which re-points every name if
``DETECTRON2_DATASETS`` changed since (the idempotency rule of ``catalog.claim_name``).

Unlabeled folders (pretraining; the cache serves the methods that use proposals):

============================  ========================  ==================================
name                          images                    proposal cache
============================  ========================  ==================================
``imagenet_train_unlabeled``  ``imagenet/train``        ``imagenet/proposals_train``
``coco_2017_train_unlabeled`` ``coco/train2017``        ``coco/proposals_train2017``
``soco_demo_unlabeled``       ``demo/unlabeled``        ``demo/proposals_unlabeled``
``neon_trees_unlabeled``      ``neon_trees/unlabeled``  ``neon_trees/proposals_unlabeled``
============================  ========================  ==================================

Labelled COCO-format sets (fine-tuning): ``soco_demo_train`` / ``soco_demo_val`` (the synthetic
demo made by ``datasets/generate_demo.py``) and ``coco_2017_train_5pct`` /
``coco_2017_train_10pct`` (made by ``datasets/prepare_mini_coco.py``, with detectron2's COCO
metadata so their class ids match ``coco_2017_val``). ``neon_trees_train`` / ``neon_trees_val``:
real aerial tree-crown boxes (made by ``datasets/prepare_neon_trees.py``, see ``neon_trees.py``).
"""
import os
from typing import Dict, Optional, Tuple

from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .catalog import datasets_root
from .coco import register_coco_json
from .folder import register_image_folder

__all__ = ["BUILTIN_UNLABELED", "BUILTIN_LABELLED", "register_builtin"]

# name -> (image folder, proposal cache), relative to the datasets root.
BUILTIN_UNLABELED: Dict[str, Tuple[str, str]] = {
    "imagenet_train_unlabeled": ("imagenet/train", "imagenet/proposals_train"),
    "coco_2017_train_unlabeled": ("coco/train2017", "coco/proposals_train2017"),
    "soco_demo_unlabeled": ("demo/unlabeled", "demo/proposals_unlabeled"),
    "neon_trees_unlabeled": ("neon_trees/unlabeled", "neon_trees/proposals_unlabeled"),
}

# name -> (image folder, COCO json, detectron2 builtin metadata key or None), relative to the
# datasets root.
BUILTIN_LABELLED: Dict[str, Tuple[str, str, Optional[str]]] = {
    "soco_demo_train": ("demo/train", "demo/annotations/instances_train.json", None),
    "soco_demo_val": ("demo/val", "demo/annotations/instances_val.json", None),
    "neon_trees_train": ("neon_trees/train", "neon_trees/annotations/instances_train.json", None),
    "neon_trees_val": ("neon_trees/val", "neon_trees/annotations/instances_val.json", None),
    "coco_2017_train_5pct": (
        "coco/train2017",
        "coco/annotations/instances_train2017_5pct.json",
        "coco",
    ),
    "coco_2017_train_10pct": (
        "coco/train2017",
        "coco/annotations/instances_train2017_10pct.json",
        "coco",
    ),
}


def register_builtin(root: Optional[str] = None) -> None:
    """Register ``BUILTIN_UNLABELED`` and ``BUILTIN_LABELLED`` under ``root``.

    Args:
        root: datasets root; default ``datasets_root()`` (``$DETECTRON2_DATASETS``).

    Raises:
        ValueError: if one of the names was registered by other code.
    """
    root = os.path.expanduser(root or datasets_root())
    for name, (image_dir, cache) in BUILTIN_UNLABELED.items():
        register_image_folder(name, os.path.join(root, image_dir), os.path.join(root, cache))
    for name, (image_dir, json_file, meta_key) in BUILTIN_LABELLED.items():
        metadata = _get_builtin_metadata(meta_key) if meta_key else {}
        register_coco_json(
            name, os.path.join(root, json_file), os.path.join(root, image_dir), metadata
        )
