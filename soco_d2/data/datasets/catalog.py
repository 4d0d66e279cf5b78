"""Bookkeeping shared by every registration function of this package.

One idempotency rule for every name soco_d2 registers (folders, COCO json, VOC trees, builtins,
``DATASETS.SSL.REGISTER`` strings). Each registration records a spec string in the dataset's
metadata (``ssl_register_spec``); registering a name again then:

- with the same spec: is skipped (nothing is touched);
- with a different spec, over a name soco_d2 registered: replaces the old registration (e.g.
  ``DETECTRON2_DATASETS`` changed, or a REGISTER string was edited between runs);
- over a name registered by other code (a detectron2 builtin such as ``coco_2017_val``, or a
  user's own ``DatasetCatalog.register``): raises, since replacing it would silently change
  what that name means.
"""
import logging
import os
from typing import Any, Dict

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["SPEC_KEY", "claim_name", "dataset_info", "datasets_root"]

logger = logging.getLogger(__name__)

# Metadata field recording the spec a name was registered with by this package.
SPEC_KEY = "ssl_register_spec"


def datasets_root() -> str:
    """The root of all builtin datasets: ``$DETECTRON2_DATASETS``, else ``datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def claim_name(name: str, spec: str) -> bool:
    """Apply the idempotency rule before registering ``name`` with ``spec``.

    Args:
        name: dataset name.
        spec: a string that identifies what ``name`` is about to mean (kind and paths).

    Returns:
        True if the caller must register ``name`` now (it is free: new, or an old registration
        of ours with another spec was just removed); False if it is registered with ``spec``.

    Raises:
        ValueError: if ``name`` was registered by code outside this package.
    """
    if name not in DatasetCatalog.list():
        return True
    previous = MetadataCatalog.get(name).get(SPEC_KEY, None)
    if previous == spec:
        return False
    if previous is None:
        raise ValueError(
            f"Dataset '{name}' is already registered by other code (e.g. a detectron2 builtin); "
            "pick another name (DATASETS.SSL.REGISTER entries must not reuse such names)"
        )
    logger.info(f"Re-registering dataset '{name}': was {previous}, now {spec}")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    return True


def dataset_info(name: str) -> Dict[str, Any]:
    """What a detector config needs to know about a registered dataset.

    Used to derive ``MODEL.ROI_HEADS.NUM_CLASSES`` and ``MODEL.MASK_ON`` from a training set.
    Unlabeled folders and VOC trees are answered from metadata alone; other datasets (COCO
    json, Cityscapes, ...) are loaded once, since detectron2 sets their classes only then.

    Args:
        name: a registered dataset.

    Returns:
        ``{"num_classes": int or None, "has_masks": bool, "evaluator_type": str or None,
        "thing_classes": list or None}``; ``has_masks`` is True when the first record with
        annotations carries ``"segmentation"``.

    Raises:
        KeyError: if ``name`` is not registered.
    """
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset '{name}' is not registered; register it with DATASETS.SSL.REGISTER or "
            "check $DETECTRON2_DATASETS (datasets/README.md)"
        )
    meta = MetadataCatalog.get(name)
    spec = meta.get(SPEC_KEY, None) or ""
    evaluator_type = meta.get("evaluator_type", None)
    has_masks = False
    # Folders have no labels, VOC XML has no masks: neither needs a (possibly huge) load.
    if not spec.startswith("folder:") and evaluator_type != "pascal_voc":
        for record in DatasetCatalog.get(name):
            annotations = record.get("annotations") or ()
            if annotations:
                has_masks = "segmentation" in annotations[0]
                break
        meta = MetadataCatalog.get(name)  # loading may have set thing_classes
    classes = meta.get("thing_classes", None)
    classes = list(classes) if classes is not None else None
    return {
        "num_classes": len(classes) if classes is not None else None,
        "has_masks": has_masks,
        "evaluator_type": evaluator_type,
        "thing_classes": classes,
    }
