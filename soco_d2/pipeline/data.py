"""A user's data as pipeline flags: the config overrides derived from ``--unlabeled``,
``--train`` and ``--test``.

The derived overrides come before the user's own ``--pretrain-opts`` / ``--finetune-opts``, so
anything derived here can still be overridden. Datasets given as registration specs are
registered in this process (to read their classes and masks) and passed to the training
subprocesses as ``DATASETS.SSL.REGISTER`` strings (soco_d2/data/datasets/spec.py).
"""
import os
import re
from typing import List, Optional, Sequence, Tuple

from detectron2.config import CfgNode

__all__ = [
    "TEST_NAME",
    "TRAIN_NAME",
    "UNLABELED_NAME",
    "finetune_data_opts",
    "pretrain_data_opts",
    "proposals_note",
    "resolve_dataset",
]

# Names given to datasets passed as specs (a spec may also name itself: NAME=coco:...).
UNLABELED_NAME = "pipeline_unlabeled"
TRAIN_NAME = "pipeline_train"
TEST_NAME = "pipeline_test"

_NAMED_SPEC = re.compile(r"^([A-Za-z0-9_-]+)=(.*)$")


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expandvars(os.path.expanduser(path)))


def resolve_dataset(arg: str, default_name: str, what: str) -> Tuple[str, Optional[str]]:
    """A registered dataset name, or a ``[NAME=]coco:JSON:IMAGES`` / ``[NAME=]voc:DIR:SPLIT
    [:CLASSES]`` spec, registered now.

    Args:
        arg: the flag's value.
        default_name: the name a spec without ``NAME=`` gets.
        what: the flag, for messages (``"--train"``).

    Returns:
        ``(dataset name, registration string or None)``; the string has absolute paths, so a
        training subprocess started elsewhere registers the same files.

    Raises:
        ValueError: a malformed spec, a folder (no labels), or an unregistered name.
    """
    from detectron2.data import DatasetCatalog

    from soco_d2.data.datasets import parse_register_spec, register_builtin, register_dataset_spec

    m = _NAMED_SPEC.match(arg)
    name, body = (m.group(1), m.group(2)) if m else (default_name, arg)
    kind = body.split(":", 1)[0].strip().lower() if ":" in body else ""
    if kind in ("coco", "voc", "folder"):
        try:
            parsed = parse_register_spec(f"{name}={body}")
        except ValueError as e:
            raise ValueError(f"{what} {arg!r}: {e}") from None
        if parsed.kind == "folder":
            raise ValueError(f"{what} {arg!r}: an image folder has no labels to fine-tune on")
        if parsed.kind == "coco":
            spec = f"{name}=coco:{_abs(parsed.args[0])}:{_abs(parsed.args[1])}"
        else:
            directory, split, classes = parsed.args
            spec = f"{name}=voc:{_abs(directory)}:{split}"
            spec += f":{','.join(classes)}" if classes else ""
        try:
            register_dataset_spec(spec)
        except (OSError, ValueError) as e:
            raise ValueError(f"{what} {arg!r}: {e}") from None
        return name, spec
    register_builtin()  # under the current DETECTRON2_DATASETS
    if arg not in DatasetCatalog.list():
        raise ValueError(
            f"{what} {arg!r}: not a registered dataset, nor a spec 'coco:JSON:IMAGES' or "
            "'voc:DIR:SPLIT[:CLASS1,CLASS2,...]'"
        )
    return arg, None


def _register_opt(cfg: CfgNode, new: List[str]) -> List[str]:
    # the config's own REGISTER strings are kept: its other datasets may still be used
    if not new:
        return []
    names = {s.split("=", 1)[0].strip() for s in new}
    entries = cfg.DATASETS.SSL.REGISTER
    entries = (entries,) if isinstance(entries, str) else tuple(entries)
    old = [s for s in entries if s.split("=", 1)[0].strip() not in names]
    return ["DATASETS.SSL.REGISTER", repr(tuple(old + new))]


def finetune_data_opts(
    cfg: CfgNode, train: Optional[str] = None, test: Optional[str] = None
) -> List[str]:
    """Overrides that point a detector config at the user's train / test sets.

    The class count and whether masks exist come from the training set
    (``soco_d2.data.datasets.dataset_info``): ``MODEL.ROI_HEADS.NUM_CLASSES`` (RetinaNet:
    ``MODEL.RETINANET.NUM_CLASSES``), ``MODEL.MASK_ON False`` when the training set has no
    masks; ``DATASETS.TRAIN`` / ``DATASETS.TEST``; ``DATASETS.SSL.REGISTER`` for specs.

    Args:
        cfg: the fine-tune config (its meta-architecture decides the class-count key).
        train / test: see :func:`resolve_dataset`; None keeps the config's.

    Returns:
        flat ``[KEY, VALUE, ...]``; empty when both are None.

    Raises:
        ValueError: a set without classes, or train and test with different classes.
    """
    from soco_d2.data.datasets import dataset_info

    register: List[str] = []
    opts: List[str] = []
    retinanet = cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    key = "MODEL.RETINANET.NUM_CLASSES" if retinanet else "MODEL.ROI_HEADS.NUM_CLASSES"
    train_info = None
    if train:
        name, spec = resolve_dataset(train, TRAIN_NAME, "--train")
        register += [spec] if spec else []
        train_info = dataset_info(name)
        if not train_info["num_classes"]:
            raise ValueError(f"--train {train!r}: dataset '{name}' has no classes (no labels?)")
        opts += [key, str(train_info["num_classes"])]
        if not train_info["has_masks"] and cfg.MODEL.MASK_ON and not retinanet:
            opts += ["MODEL.MASK_ON", "False"]  # no masks to learn from
        opts += ["DATASETS.TRAIN", repr((name,))]
    if test:
        name, spec = resolve_dataset(test, TEST_NAME, "--test")
        register += [spec] if spec and spec not in register else []
        classes = dataset_info(name)["thing_classes"]
        expected = train_info["thing_classes"] if train_info else None
        if expected is None:
            heads = cfg.MODEL.RETINANET if retinanet else cfg.MODEL.ROI_HEADS
            n_cfg = heads.NUM_CLASSES
            if classes is not None and len(classes) != n_cfg:
                raise ValueError(
                    f"--test {test!r}: {len(classes)} classes, the fine-tune config has "
                    f"{key} {n_cfg}; give --train too"
                )
        elif classes is not None and list(classes) != list(expected):
            raise ValueError(
                f"--test {test!r}: classes {classes} differ from the training set's {expected}; "
                "list them in the same order in both specs (voc:DIR:SPLIT:CLASS1,CLASS2,...)"
            )
        opts += ["DATASETS.TEST", repr((name,))]
    return _register_opt(cfg, register) + opts


def pretrain_data_opts(cfg: CfgNode, unlabeled: str, proposal_cache: Optional[str]) -> List[str]:
    """Overrides that make a pretraining config train on the image folder ``unlabeled``.

    Args:
        cfg: the pretraining config.
        unlabeled: image folder, registered as :data:`UNLABELED_NAME`.
        proposal_cache: the folder's proposal cache, for a config whose mapper uses proposals
            (None otherwise, so a method without proposals never waits for a search).

    Returns:
        flat ``[KEY, VALUE, ...]``: DATASETS.SSL.REGISTER, DATASETS.TRAIN and an empty
        DATASETS.SSL.PROPOSAL_CACHES (the folder's registration carries its cache).
    """
    spec = f"{UNLABELED_NAME}=folder:{_abs(unlabeled)}"
    spec += f":{_abs(proposal_cache)}" if proposal_cache else ""
    return [
        *_register_opt(cfg, [spec]),
        "DATASETS.TRAIN",
        repr((UNLABELED_NAME,)),
        "DATASETS.SSL.PROPOSAL_CACHES",
        "()",
    ]


def proposals_note(image_dir: str, cache: str, made_here: bool, readers: Sequence[str]) -> str:
    """The results.md line naming the proposal cache the object-level pretrainings read.

    The search settings come from the cache's own header, so a cache that existed before the
    run (``--proposals IMAGE_DIR CACHE`` reuses it unchanged) states the filter it was made with.

    Args:
        image_dir: the pretraining images.
        cache: the proposal cache.
        made_here: whether this run wrote it.
        readers: the pretrainings that read it.

    Raises:
        ValueError: the cache holds none of the folder's images (made from another folder), so
            every pretraining that reads it would have no image to train on.
    """
    from soco_d2.data.build import resolve_proposal_key
    from soco_d2.data.proposals import ProposalCache
    from soco_d2.data.proposals.images import list_images

    opened = ProposalCache(cache)
    images = list_images(image_dir)
    root = _abs(image_dir)
    # looked up as the pretraining's loader looks them up (soco_d2/data/build.py)
    covered = sum(
        1 for rel in images
        if resolve_proposal_key(opened, rel)
        or resolve_proposal_key(opened, os.path.join(root, rel))
    )
    if images and not covered:
        raise ValueError(
            f"proposal cache {cache} holds none of the {len(images)} images of {image_dir} "
            f"(its images: {opened.meta.get('source', 'unknown source')}); delete it to search "
            "this folder, or name another cache in --proposals"
        )
    f = opened.meta.get("filter")
    if f:
        how = (
            f"selective search (`{opened.meta.get('mode')}`, images at most "
            f"{opened.meta.get('max_size')} px), boxes with sides >= {f['min_side']:g} px, "
            f"aspect ratio <= {f['max_ratio']:g}, sqrt(area) {f['min_scale']:g}-"
            f"{f['max_scale']:g} of the image's"
        )
    else:
        how = f"no search settings recorded (source: {opened.meta.get('source', 'unknown')})"
    names = ", ".join(f"`{n}`" for n in readers)
    origin = "made by this run" if made_here else "an existing cache, reused as it is"
    return (
        f"Proposals of {names}: `{cache}` ({origin}; {how}); {opened.num_boxes()} boxes, {covered} of the {len(images)} pool images covered"
        + ("." if covered == len(images) else "; the others are skipped by the pretraining.")
    )
