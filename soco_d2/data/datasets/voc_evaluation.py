"""Pascal-VOC AP for XML that may lack the optional tags.

detectron2's ``PascalVOCDetectionEvaluator`` reads ground truth with
``detectron2.evaluation.pascal_voc_evaluation.parse_rec``, which requires ``<pose>``,
``<truncated>`` and ``<difficult>`` in every ``<object>`` and integer box corners. LabelImg and
many other annotation tools omit those tags (or write ``12.0``), so evaluation crashed on data
that trained fine.

``VOCDetectionEvaluator`` keeps detectron2's matching and AP code untouched: at evaluation time
it reads each XML file of the split with defaults (``pose="Unspecified"``, ``truncated=0``,
``difficult=0``, corners rounded to integers), writes complete copies to a temporary folder and
points detectron2's evaluation at them. On complete VOC XML (the official devkit) the copies
are equivalent and the AP is identical.
"""
import os
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List

from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import parse_rec
from detectron2.utils import comm

__all__ = ["read_voc_objects", "VOCDetectionEvaluator"]

_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def _int_field(obj: ET.Element, tag: str, xml_file: str) -> int:
    text = (obj.findtext(tag) or "").strip()
    if not text:
        return 0
    try:
        return int(round(float(text)))
    except ValueError:
        raise ValueError(f"{xml_file}: <{tag}> is {text!r}, expected a number") from None


def read_voc_objects(xml_file: str) -> List[Dict]:
    """The ``<object>`` entries of a VOC XML file, with defaults for optional tags.

    Args:
        xml_file: path of one annotation file.

    Returns:
        ``[{"name": str, "pose": str, "truncated": int, "difficult": int,
        "bbox": [xmin, ymin, xmax, ymax] ints (1-based, inclusive, as in the file)}, ...]``.

    Raises:
        ValueError: if an object has no ``<name>`` or no complete ``<bndbox>``.
    """
    objects = []
    for obj in ET.parse(xml_file).getroot().findall("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None or any(box.find(c) is None for c in _CORNERS):
            raise ValueError(f"{xml_file}: every <object> needs a <name> and a <bndbox> with "
                             f"{', '.join(_CORNERS)}")
        objects.append(
            {
                "name": name,
                "pose": (obj.findtext("pose") or "").strip() or "Unspecified",
                "truncated": _int_field(obj, "truncated", xml_file),
                "difficult": _int_field(obj, "difficult", xml_file),
                "bbox": [_int_field(box, c, xml_file) for c in _CORNERS],
            }
        )
    return objects


def _write_complete_xml(objects: List[Dict], path: str) -> None:
    root = ET.Element("annotation")
    for o in objects:
        obj = ET.SubElement(root, "object")
        for tag in ("name", "pose", "truncated", "difficult"):
            ET.SubElement(obj, tag).text = str(o[tag])
        box = ET.SubElement(obj, "bndbox")
        for tag, value in zip(_CORNERS, o["bbox"]):
            ET.SubElement(box, tag).text = str(value)
    ET.ElementTree(root).write(path)


class VOCDetectionEvaluator(PascalVOCDetectionEvaluator):
    """``PascalVOCDetectionEvaluator`` that accepts XML without pose/truncated/difficult.

    Same constructor, ``process`` and results (``{"bbox": {"AP", "AP50", "AP75"}}``, in
    percent); only the ground truth is read through ``read_voc_objects``. Like its parent, it
    synchronizes, so call ``evaluate`` from all ranks.
    """

    def evaluate(self):
        """Pascal-VOC AP over the split; ``None`` on ranks other than the main one."""
        if not comm.is_main_process():
            return super().evaluate()  # only contributes its predictions to the gather
        anno_template, image_set = self._anno_file_template, self._image_set_path
        with tempfile.TemporaryDirectory(prefix="voc_annotations_") as tmp:
            with open(image_set) as f:
                ids = [line.strip() for line in f if line.strip()]
            for image_id in ids:
                path = os.path.join(tmp, "annotations", image_id + ".xml")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _write_complete_xml(read_voc_objects(anno_template.format(image_id)), path)
            # Blank lines would reach detectron2 as an image id "".
            self._image_set_path = os.path.join(tmp, "image_set.txt")
            with open(self._image_set_path, "w") as f:
                f.write("\n".join(ids) + "\n")
            self._anno_file_template = os.path.join(tmp, "annotations", "{}.xml")
            try:
                return super().evaluate()
            finally:
                self._anno_file_template, self._image_set_path = anno_template, image_set
                # parse_rec memoizes by path; the copies are gone, so are their entries.
                parse_rec.cache_clear()
