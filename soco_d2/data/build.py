"""The pretraining data loader: detectron2's training loader with the config's mapper.

Differences from ``build_detection_train_loader(cfg)``'s defaults, and why:

- The mapper comes from the mapper registry (``INPUT.DATASET_MAPPER_NAME``,
  ``soco_d2.data.dataset_mappers``).
- The dataset dicts are built here and passed in, so ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``
  never applies: a labelled dataset such as ``coco_2017_train`` used for pretraining keeps its
  images without boxes too. Dicts are slimmed to what mappers read.
- Aspect-ratio grouping is off: views have fixed sizes, and mapper outputs have no
  "width"/"height" to group by.
- Proposal caches are attached only for mappers that use proposals (``uses_proposals``): each
  dict gets ``DATASETS.SSL.PROPOSAL_CACHES[i]`` (else the dataset metadata's ``proposal_cache``)
  and its key there (``str(image_id)``, or the cache's basename match); images the cache lacks
  are skipped with a logged count (training them on whole-image boxes would silently weaken
  the method, and a partial cache usually means the proposal stage has not finished).

Batches are lists of mapper outputs, as detectron2's ``trivial_batch_collator`` gives them. With
loader workers (``DATALOADER.NUM_WORKERS > 0``) :func:`pack_batch` collates instead: the same
lists, but every tensor of a batch is a view into one shared-memory buffer per dtype. A worker
hands each shared-memory buffer to the training process as a file descriptor, over a
connection of its own with an authentication handshake on both sides; with one buffer per
tensor (8 per SoCo image) that hand-off cost the worker 1.7-1.9 ms of CPU per SoCo image (about
as much as decoding and augmenting it) and the training process 1.1-1.8 ms, against 0.5 and
0.15-0.2 ms packed (docs/benchmarks.md, "Data loader").
"""
import logging
import os
from typing import Any, Dict, List, Optional

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader

from .dataset_mappers import build_dataset_mapper, get_dataset_mapper_class

__all__ = [
    "get_pretrain_dataset_dicts",
    "build_pretrain_loader",
    "attach_proposals",
    "resolve_proposal_key",
    "pack_batch",
]

logger = logging.getLogger(__name__)


def _open_cache(path: str):
    from .proposals import ProposalCache  # lazily: owned by the proposals package

    return ProposalCache(path)


def resolve_proposal_key(cache, key: str) -> Optional[str]:
    """The cache's key for image ``key`` (``ProposalCache.resolve``), or None if it lacks it."""
    try:
        return cache.resolve(key)
    except KeyError:
        return None


def attach_proposals(dicts: List[Dict], cache_path: str, dataset: str, open_cache=None) -> List[Dict]:
    """Add ``proposal_cache`` / ``proposal_key`` to dicts the cache covers; drop the others.

    Args:
        dicts: dataset dicts with "file_name" and "image_id".
        cache_path: the proposal cache of this dataset.
        dataset: dataset name, for messages.
        open_cache: opens a cache from its path (default ``ProposalCache``; tests inject fakes).

    Returns:
        the covered dicts, with the two fields added.
    """
    if open_cache is None and not os.path.exists(cache_path):
        raise FileNotFoundError(
            f"Proposal cache {cache_path} of dataset '{dataset}' not found; create it with "
            "tools/selective_search.py or tools/convert_proposals.py"
        )
    cache = (open_cache or _open_cache)(cache_path)
    out, missing = [], []
    for d in dicts:
        key = str(d.get("proposal_key", d.get("image_id", d["file_name"])))
        found = resolve_proposal_key(cache, key)
        if found is None:
            found = resolve_proposal_key(cache, d["file_name"])
        if found is None:
            missing.append(key)
            continue
        out.append({**d, "proposal_cache": str(cache_path), "proposal_key": found})
    if missing:
        logger.warning(
            f"{len(missing)} of {len(dicts)} images of '{dataset}' have no proposals in "
            f"{cache_path} and are skipped (e.g. {missing[:3]})"
        )
    if not out:
        raise ValueError(f"None of the {len(dicts)} images of '{dataset}' is in {cache_path}")
    return out


def get_pretrain_dataset_dicts(cfg, with_proposals: Optional[bool] = None, open_cache=None) -> List[Dict]:
    """The dicts of every dataset in ``cfg.DATASETS.TRAIN``, concatenated and slimmed.

    Args:
        cfg: config with ``DATASETS.TRAIN`` and ``DATASETS.SSL.PROPOSAL_CACHES``.
        with_proposals: attach proposal caches (default: whether the config's mapper uses them).
        open_cache: see :func:`attach_proposals`.

    Returns:
        list of ``{"file_name", "image_id"[, "proposal_cache", "proposal_key"]}``.
    """
    if with_proposals is None:
        with_proposals = get_dataset_mapper_class(cfg).uses_proposals
    names = list(cfg.DATASETS.TRAIN)
    caches = list(cfg.DATASETS.SSL.PROPOSAL_CACHES)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty")
    if caches and len(caches) != len(names):
        raise ValueError(
            f"DATASETS.SSL.PROPOSAL_CACHES has {len(caches)} entries for {len(names)} "
            "DATASETS.TRAIN datasets; give one per dataset or none"
        )
    out: List[Dict] = []
    for i, name in enumerate(names):
        dicts = [
            {"file_name": d["file_name"], "image_id": d.get("image_id", d["file_name"]),
             **({"proposals": d["proposals"]} if "proposals" in d else {})}
            for d in DatasetCatalog.get(name)
        ]
        if not dicts:
            raise ValueError(f"Dataset '{name}' is empty")
        if with_proposals and not all("proposals" in d for d in dicts):
            cache = (caches[i] if caches else None) or MetadataCatalog.get(name).get(
                "proposal_cache", None
            )
            if not cache:
                raise ValueError(
                    f"Dataset '{name}' has no proposal cache, which INPUT.DATASET_MAPPER_NAME "
                    f"{cfg.INPUT.DATASET_MAPPER_NAME!r} needs: set DATASETS.SSL.PROPOSAL_CACHES "
                    "or register the folder with one (DATASETS.SSL.REGISTER "
                    "'NAME=folder:IMAGE_DIR:PROPOSAL_CACHE')"
                )
            dicts = attach_proposals(dicts, str(cache), name, open_cache)
        out.extend(dicts)
    return out


def pack_batch(batch: List[Any]) -> List[Any]:
    """The batch unchanged in structure, its tensors moved into one shared-memory buffer per dtype.

    Every tensor found in the nested dicts, lists and tuples of ``batch`` is copied once into
    a buffer of its dtype allocated in shared memory, and replaced by a view of its part of it
    (same shape, dtype and values). Sent from a loader worker, the batch then crosses to the
    training process as a few buffers instead of one per tensor.
    """
    tensors: List[torch.Tensor] = []

    def find(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                find(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                find(v)

    find(batch)
    by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    views: Dict[int, torch.Tensor] = {}
    for dtype, group in by_dtype.items():
        buf = torch.empty(sum(t.numel() for t in group), dtype=dtype).share_memory_()
        torch.cat([t.reshape(-1) for t in group], out=buf)
        start = 0
        for t in group:
            views[id(t)] = buf[start : start + t.numel()].view(t.shape)
            start += t.numel()

    def replace(x):
        if isinstance(x, torch.Tensor):
            return views[id(x)]
        if isinstance(x, dict):
            return {k: replace(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(replace(v) for v in x)
        return x

    return replace(batch)


def build_pretrain_loader(cfg, mapper=None):
    """detectron2's infinite training loader over ``DATASETS.TRAIN`` with the config's mapper.

    Args:
        cfg: a soco_d2 pretraining config.
        mapper: defaults to ``build_dataset_mapper(cfg, is_train=True)``.

    Returns:
        an iterable of lists (``SOLVER.IMS_PER_BATCH`` / world size) of mapper outputs.
    """
    if mapper is None:
        mapper = build_dataset_mapper(cfg, True)
    return build_detection_train_loader(
        cfg,
        mapper=mapper,
        dataset=get_pretrain_dataset_dicts(cfg, getattr(mapper, "uses_proposals", False)),
        aspect_ratio_grouping=False,
        # in the main process (no workers) there is nothing to send: detectron2's collation
        collate_fn=pack_batch if cfg.DATALOADER.NUM_WORKERS > 0 else None,
    )
