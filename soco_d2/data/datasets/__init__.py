"""Dataset registration: unlabeled image folders, COCO json, Pascal-VOC trees, builtins.

Importing this package registers soco_d2's builtin names (``builtin.py``) under
``$DETECTRON2_DATASETS``. Every registration function follows one idempotency rule
(``catalog.claim_name``): same spec again -> skipped, changed spec of a name soco_d2 registered
-> replaced, name registered by other code -> error.

- ``folder.py``: ``register_image_folder`` (pretraining images, optional proposal cache).
- ``coco.py``: ``register_coco_json``.
- ``voc.py``: ``register_voc_folder``; ``voc_evaluation.py``: its evaluator.
- ``spec.py``: ``DATASETS.SSL.REGISTER`` strings (``register_from_cfg``).
- ``catalog.py``: ``datasets_root``, ``dataset_info`` (classes / masks of a registered set).
"""
from .builtin import BUILTIN_LABELLED, BUILTIN_UNLABELED, register_builtin
from .catalog import claim_name, dataset_info, datasets_root
from .coco import register_coco_json
from .folder import IMAGE_EXTENSIONS, load_image_folder, register_image_folder, scan_image_folder
from .spec import DatasetSpec, parse_register_spec, register_dataset_spec, register_from_cfg
from .voc import collect_voc_class_names, read_voc_split, register_voc_folder
from .voc_evaluation import VOCDetectionEvaluator, read_voc_objects

__all__ = [
    "BUILTIN_LABELLED",
    "BUILTIN_UNLABELED",
    "IMAGE_EXTENSIONS",
    "DatasetSpec",
    "VOCDetectionEvaluator",
    "claim_name",
    "collect_voc_class_names",
    "dataset_info",
    "datasets_root",
    "load_image_folder",
    "parse_register_spec",
    "read_voc_objects",
    "read_voc_split",
    "register_builtin",
    "register_coco_json",
    "register_dataset_spec",
    "register_from_cfg",
    "register_image_folder",
    "register_voc_folder",
    "scan_image_folder",
]

register_builtin()
