"""Register datasets from config strings, and the datasets soco_d2 adds to detectron2's builtins.

Users register their own data without writing code, through ``cfg.DATASETS.SOCO.REGISTER``
(from a YAML file or the command line)::

    DATASETS.SOCO.REGISTER "('mine_train=coco:/data/mine/train.json:/data/mine/images',)"

One string per dataset, fields separated by ``:``:

- ``NAME=coco:JSON:IMAGE_ROOT``: a COCO instances json (boxes, optional masks); evaluated with
  detectron2's ``COCOEvaluator``.
- ``NAME=voc:DIR:SPLIT[:CLASS1,CLASS2,...]``: a Pascal-VOC tree (``DIR/Annotations/*.xml``,
  ``DIR/JPEGImages/*.jpg``, ``DIR/ImageSets/Main/SPLIT.txt``). Without class names they are
  collected (sorted) from the split's XML files. Evaluated with ``PascalVOCDetectionEvaluator``
  (11-point AP when DIR's name contains "2007", as detectron2 does).
- ``NAME=folder:IMAGE_DIR:PROPOSAL_CACHE``: unlabeled images for pretraining, delegated to
  ``soco_d2.data.datasets.register_image_folder``.

``~`` and ``$VARS`` in paths are expanded; relative paths are taken from the working directory.
Registration is idempotent: a name registered before with the same spec is skipped; a name
that exists with a different spec (or a detectron2 builtin name) is an error.

Builtin names added here, under ``os.getenv("DETECTRON2_DATASETS", "datasets")``:
``soco_demo_train`` / ``soco_demo_val`` (the synthetic demo, ``demo/``) and
``coco_2017_train_5pct`` / ``coco_2017_train_10pct`` (made by ``datasets/prepare_mini_coco.py``).
"""
import logging
import os
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_voc_instances, register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetSpec",
    "parse_register_spec",
    "register_dataset_spec",
    "register_from_cfg",
    "register_coco_json",
    "register_voc_folder",
    "collect_voc_class_names",
    "register_soco_builtin",
    "datasets_root",
]

_KINDS = ("coco", "voc", "folder")
# Metadata key recording the spec a dataset was registered from (for idempotency checks).
_SPEC_KEY = "soco_register_spec"


class DatasetSpec(NamedTuple):
    """A parsed ``NAME=KIND:ARG1:ARG2...`` registration string."""

    name: str
    kind: str
    args: tuple


def datasets_root() -> str:
    """The root of all builtin datasets: ``$DETECTRON2_DATASETS`` or ``datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path.strip()))


def parse_register_spec(spec: str) -> DatasetSpec:
    """Parse one registration string (see module docstring for the formats).

    Args:
        spec: e.g. ``"mine=coco:/data/a.json:/data/imgs"``.

    Returns:
        The parsed spec, paths expanded.

    Raises:
        ValueError: on any malformed string, with the expected formats in the message.
    """
    usage = (
        "expected 'NAME=coco:JSON:IMAGE_ROOT', 'NAME=voc:DIR:SPLIT[:CLASS1,CLASS2,...]' or "
        "'NAME=folder:IMAGE_DIR:PROPOSAL_CACHE'"
    )
    if not isinstance(spec, str) or "=" not in spec:
        raise ValueError(f"Bad DATASETS.SOCO.REGISTER entry {spec!r}: {usage}")
    name, rest = spec.split("=", 1)
    name = name.strip()
    fields = rest.split(":")
    kind = fields[0].strip().lower()
    args = [f.strip() for f in fields[1:]]
    if not name or kind not in _KINDS:
        raise ValueError(f"Bad DATASETS.SOCO.REGISTER entry {spec!r}: {usage}")
    if kind in ("coco", "folder"):
        if len(args) != 2 or not all(args):
            raise ValueError(f"Bad DATASETS.SOCO.REGISTER entry {spec!r}: {usage}")
        return DatasetSpec(name, kind, (_expand(args[0]), _expand(args[1])))
    # voc
    if len(args) not in (2, 3) or not args[0] or not args[1]:
        raise ValueError(f"Bad DATASETS.SOCO.REGISTER entry {spec!r}: {usage}")
    classes = tuple(c.strip() for c in args[2].split(",") if c.strip()) if len(args) == 3 else ()
    return DatasetSpec(name, kind, (_expand(args[0]), args[1], classes))


def _check_not_registered(name: str, spec_repr: str) -> bool:
    """True if ``name`` still needs registering; False if registered with this same spec."""
    if name not in DatasetCatalog.list():
        return True
    previous = MetadataCatalog.get(name).get(_SPEC_KEY, None)
    if previous == spec_repr:
        return False
    if previous is None:
        raise ValueError(
            f"Dataset '{name}' is already registered by other code (e.g. a detectron2 builtin); "
            "pick another name for DATASETS.SOCO.REGISTER."
        )
    raise ValueError(
        f"Dataset '{name}' is already registered with a different spec:\n  {previous}\n"
        f"now asked for:\n  {spec_repr}"
    )


def register_coco_json(
    name: str, json_file: str, image_root: str, metadata: Optional[Dict] = None
) -> bool:
    """Register a COCO instances json (lazily loaded) with ``evaluator_type="coco"``.

    Args:
        name: dataset name.
        json_file: COCO instances json.
        image_root: directory the json's ``file_name`` entries are relative to.
        metadata: extra metadata (e.g. detectron2's builtin COCO metadata).

    Returns:
        True if registered now, False if it already was with the same spec.
    """
    spec_repr = f"coco:{json_file}:{image_root}"
    if not _check_not_registered(name, spec_repr):
        return False
    register_coco_instances(name, dict(metadata or {}), json_file, image_root)
    MetadataCatalog.get(name).set(**{_SPEC_KEY: spec_repr})
    return True


def _read_voc_split(dirname: str, split: str) -> List[str]:
    split_file = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(f"VOC split file not found: {split_file}")
    with open(split_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    # detectron2's load_voc_instances reads the split with np.loadtxt, which returns a 0-d
    # array (not iterable) for a one-line file.
    if len(ids) < 2:
        raise ValueError(f"{split_file} lists {len(ids)} images; a VOC split needs at least 2")
    return ids


def collect_voc_class_names(dirname: str, split: str) -> List[str]:
    """Sorted set of object class names found in a VOC split's XML files.

    Args:
        dirname: VOC tree root (with ``Annotations/`` and ``ImageSets/Main/``).
        split: split file stem, e.g. ``trainval``.

    Returns:
        Class names, sorted so the contiguous ids are stable across runs.
    """
    names = set()
    for fileid in _read_voc_split(dirname, split):
        tree = ET.parse(os.path.join(dirname, "Annotations", fileid + ".xml"))
        names.update(obj.find("name").text.strip() for obj in tree.findall("object"))
    if not names:
        raise ValueError(f"No <object> found in the XML files of {dirname}, split {split}")
    return sorted(names)


def register_voc_folder(
    name: str, dirname: str, split: str, class_names: Sequence[str] = ()
) -> bool:
    """Register a Pascal-VOC XML tree (lazily loaded) with ``evaluator_type="pascal_voc"``.

    Args:
        name: dataset name.
        dirname: tree root containing ``Annotations``, ``ImageSets/Main``, ``JPEGImages``.
        split: split file stem under ``ImageSets/Main``.
        class_names: class names in contiguous-id order; empty = collect from the XMLs.

    Returns:
        True if registered now, False if it already was with the same spec.
    """
    spec_repr = f"voc:{dirname}:{split}:{','.join(class_names)}"
    if not _check_not_registered(name, spec_repr):
        return False
    _read_voc_split(dirname, split)  # fail now, clearly, rather than at first use
    classes = list(class_names) or collect_voc_class_names(dirname, split)
    # PascalVOCDetectionEvaluator switches to the 11-point metric for year 2007.
    year = 2007 if "2007" in os.path.basename(os.path.normpath(dirname)) else 2012
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, classes))
    MetadataCatalog.get(name).set(
        thing_classes=classes,
        dirname=dirname,
        year=year,
        split=split,
        evaluator_type="pascal_voc",
        **{_SPEC_KEY: spec_repr},
    )
    return True


def register_dataset_spec(spec: str) -> str:
    """Register one ``NAME=KIND:...`` string; returns the dataset name."""
    parsed = parse_register_spec(spec)
    name, kind, args = parsed
    if kind == "coco":
        register_coco_json(name, args[0], args[1])
    elif kind == "voc":
        register_voc_folder(name, args[0], args[1], args[2])
    else:
        spec_repr = f"folder:{args[0]}:{args[1]}"
        if _check_not_registered(name, spec_repr):
            # Owned by the pretraining-data module; imported lazily to keep this one light.
            from soco_d2.data.datasets import register_image_folder

            register_image_folder(name, args[0], args[1])
            MetadataCatalog.get(name).set(**{_SPEC_KEY: spec_repr})
    return name


def register_from_cfg(cfg) -> List[str]:
    """Register every string of ``cfg.DATASETS.SOCO.REGISTER`` (and soco_d2's builtins).

    Args:
        cfg: a detectron2 config with soco_d2's keys (``add_soco_config``).

    Returns:
        Names of the datasets the REGISTER strings name.
    """
    register_soco_builtin()
    entries = cfg.DATASETS.SOCO.REGISTER
    if isinstance(entries, str):  # a single string passed without tuple syntax
        entries = (entries,)
    return [register_dataset_spec(s) for s in _flatten(entries)]


def _flatten(entries: Iterable) -> List[str]:
    out = []
    for e in entries:
        out.extend(_flatten(e) if isinstance(e, (list, tuple)) else [e])
    return out


# Builtin splits: name -> (image root, json), relative to datasets_root().
_SOCO_BUILTIN = {
    "soco_demo_train": ("demo/train", "demo/annotations/instances_train.json", None),
    "soco_demo_val": ("demo/val", "demo/annotations/instances_val.json", None),
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


def register_soco_builtin(root: Optional[str] = None) -> None:
    """Register soco_d2's builtin datasets under ``root`` (default ``datasets_root()``).

    Nothing is read until a dataset is used. If they were registered before under another
    root (``DETECTRON2_DATASETS`` changed), they are re-registered under the new one.
    """
    root = root or datasets_root()
    for name, (image_dir, json_rel, meta_key) in _SOCO_BUILTIN.items():
        json_file, image_root = os.path.join(root, json_rel), os.path.join(root, image_dir)
        spec_repr = f"coco:{json_file}:{image_root}"
        if name in DatasetCatalog.list():
            previous = MetadataCatalog.get(name).get(_SPEC_KEY, None)
            if previous == spec_repr:
                continue
            if previous is None:
                raise ValueError(f"Dataset '{name}' was registered by other code")
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        metadata = _get_builtin_metadata(meta_key) if meta_key else {}
        register_coco_json(name, json_file, image_root, metadata)


register_soco_builtin()
