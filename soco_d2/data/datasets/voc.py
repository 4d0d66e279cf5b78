"""Pascal-VOC XML trees: ``DIR/Annotations/*.xml``, ``DIR/JPEGImages/*.jpg``,
``DIR/ImageSets/Main/SPLIT.txt``.

Records are loaded by detectron2's ``load_voc_instances`` (boxes only; ``<difficult>`` objects
are kept for training, as detectron2 does). The XML may lack the optional ``<pose>``,
``<truncated>`` and ``<difficult>`` tags, as LabelImg and many other tools write it: training
never reads them, and ``evaluator_type="pascal_voc"`` resolves to
``soco_d2.data.datasets.voc_evaluation.VOCDetectionEvaluator``, which reads them with defaults.
"""
import os
import xml.etree.ElementTree as ET
from typing import List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_voc_instances

from .catalog import SPEC_KEY, claim_name

__all__ = ["read_voc_split", "collect_voc_class_names", "register_voc_folder"]


def read_voc_split(dirname: str, split: str) -> List[str]:
    """Image ids of a VOC split file.

    Args:
        dirname: VOC tree root.
        split: split file stem under ``ImageSets/Main``, e.g. ``trainval``.

    Returns:
        the ids in file order.

    Raises:
        FileNotFoundError: if the split file is missing.
        ValueError: if it lists fewer than 2 images.
    """
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
        class names, sorted so the contiguous ids are stable across runs.

    Raises:
        ValueError: if no XML file of the split has an ``<object>``.
    """
    names = set()
    for fileid in read_voc_split(dirname, split):
        tree = ET.parse(os.path.join(dirname, "Annotations", fileid + ".xml"))
        names.update(obj.findtext("name", "").strip() for obj in tree.findall("object"))
    names.discard("")
    if not names:
        raise ValueError(f"No <object> found in the XML files of {dirname}, split {split}")
    return sorted(names)


def register_voc_folder(
    name: str, dirname: str, split: str, class_names: Sequence[str] = ()
) -> bool:
    """Register a Pascal-VOC XML tree (lazily loaded) with ``evaluator_type="pascal_voc"``.

    The split file is checked now, so a wrong path fails at registration, not at first use.

    Args:
        name: dataset name.
        dirname: tree root containing ``Annotations``, ``ImageSets/Main``, ``JPEGImages``.
        split: split file stem under ``ImageSets/Main``.
        class_names: class names in contiguous-id order; empty = collect (sorted) from the
            split's XML files.

    Returns:
        True if registered now, False if ``name`` already was with the same arguments.

    Metadata set: ``thing_classes``, ``dirname``, ``split``, ``year`` (2007 when the tree's
    folder name contains "2007", which selects the 11-point AP of VOC07, else 2012),
    ``evaluator_type="pascal_voc"``.
    """
    dirname = os.path.expandvars(os.path.expanduser(dirname))
    class_names = tuple(class_names)
    spec = f"voc:{dirname}:{split}:{','.join(class_names)}"
    read_voc_split(dirname, split)
    if not claim_name(name, spec):
        return False
    classes = list(class_names) or collect_voc_class_names(dirname, split)
    year = 2007 if "2007" in os.path.basename(os.path.normpath(dirname)) else 2012
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, classes))
    MetadataCatalog.get(name).set(
        thing_classes=classes,
        dirname=dirname,
        year=year,
        split=split,
        evaluator_type="pascal_voc",
        **{SPEC_KEY: spec},
    )
    return True
