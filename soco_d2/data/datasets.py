"""Pretraining datasets: image folders paired with a proposal cache.

Dataset dicts (contract 2) are kept small, since ImageNet has 1.28M of them::

    {"file_name": absolute path, "image_id": key, "proposal_cache": cache path,
     "proposal_key": key in that cache}

``register_image_folder(name, image_root, proposal_cache)`` registers any folder: image files
(``IMAGE_EXTENSIONS``, any depth) are keyed by their POSIX path relative to ``image_root`` and
looked up in the cache with ``cache.find`` (exact key, else basename, which matches the
official SoCo JSON). Images the cache does not know are skipped with a logged count:
training them on whole-image boxes would silently weaken SoCo, and a partial cache usually
means the proposal stage has not finished.

Builtin names, under ``$DETECTRON2_DATASETS`` (default ``datasets``), registered lazily (no
disk access until a dataset is used):

==============================  =======================  ================================
name                            images                   proposal cache
==============================  =======================  ================================
``imagenet_train_soco``         ``imagenet/train``       ``imagenet/proposals_train``
``coco_2017_train_images_soco`` ``coco/train2017``       ``coco/proposals_train2017``
``soco_demo_unlabeled``         ``demo/unlabeled``       ``demo/proposals_unlabeled``
==============================  =======================  ================================

The COCO entry uses the images only (labels unused). Caches are written by
``tools/selective_search.py`` or converted from the official JSON by
``tools/convert_proposals.py``.
"""

import logging
import os
from typing import Any, Callable, Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "IMAGE_EXTENSIONS",
    "scan_image_folder",
    "load_image_folder",
    "register_image_folder",
    "register_pretrain_builtin",
    "PRETRAIN_BUILTIN",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

# name -> (image folder, proposal cache), both relative to $DETECTRON2_DATASETS.
PRETRAIN_BUILTIN = {
    "imagenet_train_soco": ("imagenet/train", "imagenet/proposals_train"),
    "coco_2017_train_images_soco": ("coco/train2017", "coco/proposals_train2017"),
    "soco_demo_unlabeled": ("demo/unlabeled", "demo/proposals_unlabeled"),
}

_SPEC_KEY = "soco_folder_spec"  # metadata field recording what a name was registered with


def _open_proposal_cache(path: str):
    from .proposals import ProposalCache  # lazily: owned by the proposals module

    return ProposalCache(path)


def scan_image_folder(image_root: str) -> List[str]:
    """Image files under ``image_root`` (recursively, symlinks followed), sorted.

    Args:
        image_root: folder to scan.

    Returns:
        POSIX paths relative to ``image_root``, e.g. ``"n01440764/n01440764_10026.JPEG"``.
    """
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Image folder not found: {image_root}")
    keys = []
    for dirpath, dirnames, filenames in os.walk(image_root, followlinks=True):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, image_root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for f in sorted(filenames):
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                keys.append(prefix + f)
    keys.sort()
    return keys


def _resolve_key(cache: Any, key: str) -> Optional[str]:
    """The cache's key for image ``key``, or None if the cache lacks it."""
    if key in cache:
        return key
    try:
        found = cache.find(key)
    except KeyError:
        return None
    # ProposalCache.find returns the boxes, not the key: keep ours, the mapper's lookup falls
    # back to find() the same way.
    return found if isinstance(found, str) else key


def load_image_folder(
    image_root: str,
    proposal_cache: str,
    open_cache: Optional[Callable[[str], Any]] = None,
) -> List[Dict[str, str]]:
    """Dataset dicts for every image of ``image_root`` that ``proposal_cache`` covers.

    Args:
        image_root: image folder.
        proposal_cache: cache path (opened with ``ProposalCache`` unless ``open_cache``).
        open_cache: opens a cache from its path (tests inject fakes here).

    Returns:
        list of contract-2 dicts; images missing from the cache are skipped and logged.
    """
    image_root = os.path.abspath(os.path.expanduser(image_root))
    keys = scan_image_folder(image_root)
    if not keys:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {image_root}")
    if open_cache is None and not os.path.exists(proposal_cache):
        raise FileNotFoundError(
            f"Proposal cache {proposal_cache} not found for {image_root}; create it with "
            "tools/selective_search.py or tools/convert_proposals.py"
        )
    cache = (open_cache or _open_proposal_cache)(proposal_cache)
    dicts, missing = [], []
    for key in keys:
        found = _resolve_key(cache, key)
        if found is None:
            missing.append(key)
            continue
        dicts.append(
            {
                "file_name": os.path.join(image_root, key),
                "image_id": key,
                "proposal_cache": proposal_cache,
                "proposal_key": found,
            }
        )
    if missing:
        logger.warning(
            f"{len(missing)} of {len(keys)} images under {image_root} have no proposals in "
            f"{proposal_cache} and are skipped (e.g. {missing[:3]})"
        )
    if not dicts:
        raise ValueError(
            f"None of the {len(keys)} images under {image_root} is in {proposal_cache}"
        )
    logger.info(f"Loaded {len(dicts)} pretraining images from {image_root}")
    return dicts


def register_image_folder(name: str, image_root: str, proposal_cache: str) -> None:
    """Register an unlabeled image folder with its proposal cache for pretraining.

    Nothing is read until ``DatasetCatalog.get(name)``.

    Args:
        name: dataset name.
        image_root: image folder (searched recursively).
        proposal_cache: proposal cache path (contract 1).

    Metadata set: ``image_root``, ``proposal_cache``, ``evaluator_type=None``.
    """
    image_root = os.path.abspath(os.path.expanduser(image_root))
    proposal_cache = os.path.abspath(os.path.expanduser(proposal_cache))
    DatasetCatalog.register(name, lambda: load_image_folder(image_root, proposal_cache))
    MetadataCatalog.get(name).set(
        image_root=image_root,
        proposal_cache=proposal_cache,
        evaluator_type=None,
        **{_SPEC_KEY: f"{image_root}:{proposal_cache}"},
    )


def register_pretrain_builtin(root: Optional[str] = None) -> None:
    """Register ``PRETRAIN_BUILTIN`` under ``root`` (default ``$DETECTRON2_DATASETS``).

    Idempotent; names registered before under another root are re-registered under this one.
    """
    root = os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))
    for name, (image_dir, cache_rel) in PRETRAIN_BUILTIN.items():
        image_root = os.path.abspath(os.path.join(root, image_dir))
        cache = os.path.abspath(os.path.join(root, cache_rel))
        if name in DatasetCatalog.list():
            previous = MetadataCatalog.get(name).get(_SPEC_KEY, None)
            if previous == f"{image_root}:{cache}":
                continue
            if previous is None:
                raise ValueError(f"Dataset '{name}' was registered by other code")
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_image_folder(name, image_root, cache)


register_pretrain_builtin()
