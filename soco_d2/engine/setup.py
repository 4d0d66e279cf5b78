"""Config setup shared by ``tools/train_net.py``, the benchmark, the pipeline and the tests."""
import argparse
from typing import Optional, Sequence

from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog

from soco_d2.config import add_ssl_config
from soco_d2.solver.schedule import resolve_schedule

__all__ = ["setup_cfg", "load_cfg", "count_train_images", "check_detector_data"]


def count_train_images(cfg: CfgNode) -> int:
    """Total number of dataset dicts over ``cfg.DATASETS.TRAIN``.

    Args:
        cfg: a config whose training datasets are registered.

    Returns:
        The summed ``len(DatasetCatalog.get(name))``.
    """
    total = 0
    for name in cfg.DATASETS.TRAIN:
        if name not in DatasetCatalog.list():
            raise KeyError(
                f"Training dataset {name!r} is not registered. Register it with "
                "DATASETS.SSL.REGISTER (see soco_d2/data/datasets/spec.py) or check "
                "$DETECTRON2_DATASETS (datasets/README.md)."
            )
        total += len(DatasetCatalog.get(name))
    return total


def load_cfg(
    config_file: str,
    opts: Sequence[str] = (),
    num_train_images: Optional[int] = None,
    register: bool = True,
) -> CfgNode:
    """Build a frozen config from a YAML file and ``KEY VALUE`` overrides.

    Steps: detectron2 defaults + soco_d2 keys, merge file and opts, register the datasets in
    DATASETS.SSL.REGISTER, epochs -> iterations and batch-scaled BASE_LR, freeze.

    Args:
        config_file: path of a YAML config (``_BASE_`` chains resolved by detectron2).
        opts: flat ``[KEY, VALUE, ...]`` overrides.
        num_train_images: training-set size for SOLVER.EPOCHS; None counts DATASETS.TRAIN
            (only when SOLVER.EPOCHS > 0; loads the dataset dicts once).
        register: register DATASETS.SSL.REGISTER entries (idempotent).

    Returns:
        The frozen config.
    """
    cfg = get_cfg()
    add_ssl_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if register:
        from soco_d2.data.datasets import register_from_cfg

        register_from_cfg(cfg)
    if cfg.SOLVER.EPOCHS > 0 and num_train_images is None:
        num_train_images = count_train_images(cfg)
    resolve_schedule(cfg, num_train_images or 0)
    cfg.freeze()
    return cfg


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The config of a run from detectron2's ``default_argument_parser`` arguments.

    No side effects besides dataset registration; ``tools/train_net.py`` then calls
    ``detectron2.engine.default_setup`` (logging, config dump, seeding).

    Args:
        args: has ``config_file`` and ``opts``.

    Returns:
        The frozen config.
    """
    return load_cfg(args.config_file, args.opts or ())


def _num_classes_key(cfg: CfgNode) -> str:
    return (
        "MODEL.RETINANET.NUM_CLASSES"
        if cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
        else "MODEL.ROI_HEADS.NUM_CLASSES"
    )


def check_detector_data(cfg: CfgNode, dataset_dicts: Sequence[dict]) -> None:
    """Fail before training when a detector config disagrees with its training data.

    Checks that the class count of the config equals the training set's (metadata
    ``thing_classes`` of every DATASETS.TRAIN entry, which must agree), and that MODEL.MASK_ON
    is only set for data with masks. Without this, a wrong count trains silently (too many
    classes) or fails deep inside a loss (too few).

    Args:
        cfg: a detector config.
        dataset_dicts: the loaded training dicts (loading registers COCO metadata).

    Raises:
        ValueError: naming the key, its value and what the data has.
    """
    from detectron2.data import MetadataCatalog

    key = _num_classes_key(cfg)
    configured = cfg.MODEL.RETINANET.NUM_CLASSES if "RETINANET" in key else (
        cfg.MODEL.ROI_HEADS.NUM_CLASSES
    )
    counts = {}
    for name in cfg.DATASETS.TRAIN:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None:
            counts[name] = len(classes)
    if len(set(counts.values())) > 1:
        raise ValueError(f"DATASETS.TRAIN datasets have different class counts: {counts}")
    if counts:
        n = next(iter(counts.values()))
        if n != configured:
            raise ValueError(
                f"{key} is {configured} but the training data {list(counts)} has {n} classes; "
                f"set {key} {n}"
            )
    if cfg.MODEL.MASK_ON:
        annotated = [d for d in dataset_dicts if d.get("annotations")]
        if annotated and not any(
            "segmentation" in a for d in annotated[:50] for a in d["annotations"]
        ):
            raise ValueError(
                f"MODEL.MASK_ON is True but the training data {list(cfg.DATASETS.TRAIN)} has no "
                "masks (no 'segmentation' in its annotations); set MODEL.MASK_ON False"
            )
