"""COCO-format instance annotations (a json file and its image folder)."""
import os
from typing import Dict, Optional

from detectron2.data import MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .catalog import SPEC_KEY, claim_name

__all__ = ["register_coco_json"]


def register_coco_json(
    name: str, json_file: str, image_root: str, metadata: Optional[Dict] = None
) -> bool:
    """Register a COCO instances json (lazily loaded) with ``evaluator_type="coco"``.

    Boxes and, when the json has them, polygon/RLE masks are loaded by detectron2's
    ``load_coco_json``, which also sets ``thing_classes`` (in category-id order) on first load.

    Args:
        name: dataset name.
        json_file: COCO instances json.
        image_root: folder the json's ``file_name`` entries are relative to.
        metadata: extra metadata (e.g. detectron2's builtin COCO metadata, which fixes the
            80-class contiguous ids of a COCO subset).

    Returns:
        True if registered now, False if ``name`` already was with the same files.
    """
    json_file = os.path.expandvars(os.path.expanduser(json_file))
    image_root = os.path.expandvars(os.path.expanduser(image_root))
    spec = f"coco:{json_file}:{image_root}"
    if not claim_name(name, spec):
        return False
    register_coco_instances(name, dict(metadata or {}), json_file, image_root)
    MetadataCatalog.get(name).set(**{SPEC_KEY: spec})
    return True
