"""Unlabeled image folders for pretraining.

Dataset dicts are kept small, since ImageNet has 1.28M of them::

    {"file_name": absolute path, "image_id": POSIX path relative to the folder}

Image files (``IMAGE_EXTENSIONS``, any depth, hidden files skipped) are listed recursively and
sorted, so the same folder always gives the same list.

A folder may name a proposal cache. It is only recorded, as the metadata field
``proposal_cache`` (an absolute path); the folder is never filtered by it here. The pretraining
loader (``soco_d2.data.build``) attaches proposals, keyed by ``image_id``, for the methods that
use them, and drops (and logs) the images the cache lacks. Methods without proposals (MoCo,
DenseCL, ...) need no cache at all.
"""
import logging
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .catalog import SPEC_KEY, claim_name

__all__ = ["IMAGE_EXTENSIONS", "scan_image_folder", "load_image_folder", "register_image_folder"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expandvars(os.path.expanduser(path)))


def scan_image_folder(image_root: str) -> List[str]:
    """Image files under ``image_root`` (recursively, symlinks followed), sorted.

    Args:
        image_root: folder to scan.

    Returns:
        POSIX paths relative to ``image_root``, e.g. ``"n01440764/n01440764_10026.JPEG"``.

    Raises:
        FileNotFoundError: if ``image_root`` is not a folder.
    """
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Image folder not found: {image_root}")
    keys = []
    for dirpath, dirnames, filenames in os.walk(image_root, followlinks=True):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, image_root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for f in filenames:
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                keys.append(prefix + f)
    keys.sort()
    return keys


def load_image_folder(image_root: str) -> List[Dict[str, str]]:
    """Dataset dicts for every image of ``image_root``.

    Args:
        image_root: image folder (``~`` and ``$VARS`` expanded).

    Returns:
        ``[{"file_name": absolute path, "image_id": relative POSIX path}, ...]``, sorted by
        ``image_id``.

    Raises:
        FileNotFoundError: if the folder does not exist.
        ValueError: if it holds no image.
    """
    image_root = _abspath(image_root)
    keys = scan_image_folder(image_root)
    if not keys:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {image_root}")
    logger.info(f"Loaded {len(keys)} unlabeled images from {image_root}")
    return [{"file_name": os.path.join(image_root, key), "image_id": key} for key in keys]


def register_image_folder(
    name: str, image_root: str, proposal_cache: Optional[str] = None
) -> bool:
    """Register an unlabeled image folder for pretraining (lazily: nothing is read now).

    Args:
        name: dataset name.
        image_root: image folder (searched recursively).
        proposal_cache: proposal cache file for the methods that use proposals (written by
            ``tools/selective_search.py`` or ``tools/convert_proposals.py``); only recorded in
            the metadata, never opened here.

    Returns:
        True if registered now, False if ``name`` already was with the same folder and cache.

    Metadata set: ``image_root``, ``proposal_cache`` (absolute, or None), ``evaluator_type=None``.
    """
    image_root = _abspath(image_root)
    proposal_cache = _abspath(proposal_cache) if proposal_cache else None
    spec = f"folder:{image_root}:{proposal_cache or ''}"
    if not claim_name(name, spec):
        return False
    DatasetCatalog.register(name, lambda: load_image_folder(image_root))
    MetadataCatalog.get(name).set(
        image_root=image_root,
        proposal_cache=proposal_cache,
        evaluator_type=None,
        **{SPEC_KEY: spec},
    )
    return True
