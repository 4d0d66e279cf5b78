"""The pretraining data loader: detectron2's training loader with the SoCo mapper.

Differences from ``build_detection_train_loader(cfg)``'s defaults, and why:

- The dataset dicts are built here and passed in, so ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``
  never applies: pretraining dicts have no "annotations" (detectron2 would skip the filter for
  them anyway, but a labelled dataset such as ``coco_2017_train`` used for pretraining must
  keep its images without boxes too).
- Aspect-ratio grouping is off: every view of every image has the size in
  ``INPUT.SOCO.VIEW_SIZES``, and the mapper's output has no "width"/"height" to group by.
- Any registered dataset can be a pretraining dataset: dicts without a "proposal_cache" get
  ``DATASETS.SOCO.PROPOSAL_CACHES[i]`` (else the dataset metadata's ``proposal_cache``), keyed
  by ``str(image_id)`` (contract 1), and are slimmed to the four fields the mapper reads.

Batches are lists of mapper outputs (detectron2's ``trivial_batch_collator``), which is what
the SoCo model consumes.
"""

from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader

from .mapper import CacheSource, SoCoDatasetMapper

__all__ = ["get_pretrain_dataset_dicts", "build_soco_pretrain_loader"]


def get_pretrain_dataset_dicts(cfg) -> List[Dict]:
    """Contract-2 dicts of every dataset in ``cfg.DATASETS.TRAIN``, concatenated.

    Args:
        cfg: config with ``DATASETS.TRAIN`` and ``DATASETS.SOCO.PROPOSAL_CACHES``.

    Returns:
        list of ``{"file_name", "image_id", "proposal_cache", "proposal_key"}``.
    """
    names = list(cfg.DATASETS.TRAIN)
    caches = list(cfg.DATASETS.SOCO.PROPOSAL_CACHES)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty")
    if caches and len(caches) != len(names):
        raise ValueError(
            f"DATASETS.SOCO.PROPOSAL_CACHES has {len(caches)} entries for {len(names)} "
            "DATASETS.TRAIN datasets; give one per dataset or none"
        )
    out: List[Dict] = []
    for i, name in enumerate(names):
        override = caches[i] if caches else None
        default_cache = override or MetadataCatalog.get(name).get("proposal_cache", None)
        dicts = DatasetCatalog.get(name)
        if not len(dicts):
            raise ValueError(f"Dataset '{name}' is empty")
        for d in dicts:
            cache = override or d.get("proposal_cache") or default_cache
            if not cache:
                raise ValueError(
                    f"Dataset '{name}' has no proposal cache: set DATASETS.SOCO.PROPOSAL_CACHES "
                    "or register it with soco_d2.data.datasets.register_image_folder"
                )
            key = d.get("proposal_key") if "proposal_cache" in d else None
            out.append(
                {
                    "file_name": d["file_name"],
                    "image_id": d.get("image_id", d["file_name"]),
                    "proposal_cache": str(cache),
                    "proposal_key": str(key if key is not None else d.get("image_id")),
                }
            )
    return out


def build_soco_pretrain_loader(
    cfg, mapper: Optional[SoCoDatasetMapper] = None, proposal_caches: Optional[CacheSource] = None
):
    """detectron2's infinite training loader over ``DATASETS.TRAIN`` with the SoCo mapper.

    Args:
        cfg: a soco_d2 config.
        mapper: defaults to ``SoCoDatasetMapper(cfg, is_train=True)``.
        proposal_caches: passed to the default mapper (how to open caches; tests use fakes).

    Returns:
        an iterable of lists (``SOLVER.IMS_PER_BATCH`` / world size) of mapper outputs.
    """
    if mapper is None:
        mapper = SoCoDatasetMapper(cfg, True, proposal_caches=proposal_caches)
    return build_detection_train_loader(
        cfg,
        mapper=mapper,
        dataset=get_pretrain_dataset_dicts(cfg),
        aspect_ratio_grouping=False,
    )
