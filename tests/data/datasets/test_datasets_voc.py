"""Pascal-VOC trees: registration, loading, and AP on XML without the optional tags."""
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, Instances

from soco_d2.data.datasets import (
    VOCDetectionEvaluator,
    read_voc_objects,
    register_dataset_spec,
    register_voc_folder,
)

from _data import unique_name, write_voc

# Three images as LabelImg writes them: no <pose>, <truncated>, <difficult>, except one
# explicitly difficult dog, and one corner written as a float.
LABELIMG_OBJECTS = [
    [("cat", (11, 21, 40, 45))],
    [("cat", (5, 6, "70.0", 49))],
    [("dog", (30, 10, 60, 40)), ("dog", (2, 2, 20, 20), 1)],
]


def test_voc_collects_classes_and_loads(tmp_path):
    root = write_voc(
        tmp_path / "VOC2007",
        [[("zebra", (11, 21, 40, 45)), ("cat", (1, 1, 10, 10))], [("zebra", (5, 6, 70, 49))]],
    )
    name = unique_name("myvoc")
    register_dataset_spec(f"{name}=voc:{root}:trainval")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cat", "zebra"]  # sorted, each once
    assert meta.evaluator_type == "pascal_voc" and meta.year == 2007
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == ["0000", "0001"]
    first = dicts[0]["annotations"]
    # VOC boxes are 1-based inclusive; detectron2 shifts x1, y1 to 0-based.
    assert [a["category_id"] for a in first] == [1, 0]
    assert first[0]["bbox"] == pytest.approx([10, 20, 40, 45])


def test_voc_explicit_classes_keep_order(tmp_path):
    root = write_voc(tmp_path / "mine", [[("cat", (1, 1, 10, 10))], []])
    name = unique_name("myvoc")
    register_dataset_spec(f"{name}=voc:{root}:trainval:zebra,cat")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["zebra", "cat"] and meta.year == 2012
    assert DatasetCatalog.get(name)[0]["annotations"][0]["category_id"] == 1


def test_voc_bad_split_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file"):
        register_dataset_spec(f"{unique_name('v')}=voc:{tmp_path}:trainval")
    root = write_voc(tmp_path / "one", [[("cat", (1, 1, 10, 10))]])
    with pytest.raises(ValueError, match="at least 2"):
        register_dataset_spec(f"{unique_name('v')}=voc:{root}:trainval:cat")


def test_read_voc_objects_defaults(tmp_path):
    root = write_voc(tmp_path / "t", LABELIMG_OBJECTS, tags=False)
    assert read_voc_objects(f"{root}/Annotations/0001.xml") == [
        {"name": "cat", "pose": "Unspecified", "truncated": 0, "difficult": 0,
         "bbox": [5, 6, 70, 49]}
    ]
    assert [o["difficult"] for o in read_voc_objects(f"{root}/Annotations/0002.xml")] == [0, 1]
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(ValueError, match="bad.xml.*bndbox"):
        read_voc_objects(str(bad))


def _predict(evaluator, dicts, keep, extra=()):
    """Feed ground-truth boxes (those ``keep`` accepts) plus ``extra`` as predictions.

    ``extra``: (image index, class id, score, XYXY box in dataset-dict coordinates).
    """
    per_image = {i: [] for i in range(len(dicts))}
    for i, d in enumerate(dicts):
        for j, a in enumerate(d["annotations"]):
            if keep(i, j):
                per_image[i].append((a["category_id"], 0.9 - 0.1 * i, a["bbox"]))
    for i, cls, score, box in extra:
        per_image[i].append((cls, score, box))
    evaluator.reset()
    for i, d in enumerate(dicts):
        inst = Instances((d["height"], d["width"]))
        preds = per_image[i]
        boxes = torch.tensor([p[2] for p in preds], dtype=torch.float32).view(-1, 4)
        inst.pred_boxes = Boxes(boxes)
        inst.scores = torch.tensor([p[1] for p in preds], dtype=torch.float32)
        inst.pred_classes = torch.tensor([p[0] for p in preds], dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_voc_without_optional_tags_trains_and_evaluates(tmp_path):
    root = write_voc(tmp_path / "labelimg", LABELIMG_OBJECTS, tags=False)
    name = unique_name("labelimg")
    assert register_voc_folder(name, root, "trainval")
    assert not register_voc_folder(name, root, "trainval")  # same spec: a no-op
    dicts = DatasetCatalog.get(name)
    assert [len(d["annotations"]) for d in dicts] == [1, 1, 2]
    assert MetadataCatalog.get(name).thing_classes == ["cat", "dog"]

    # detectron2's own evaluator cannot read these files.
    plain = PascalVOCDetectionEvaluator(name)
    plain.reset()
    with pytest.raises(AttributeError):
        plain.evaluate()

    evaluator = VOCDetectionEvaluator(name)
    perfect = _predict(evaluator, dicts, keep=lambda i, j: True)
    assert perfect["AP50"] == pytest.approx(100.0)
    assert perfect["AP"] == pytest.approx(100.0)  # exact boxes pass every IoU threshold

    # Miss the cat of image 1, add a false cat (score 0.5) on image 2, ignore the difficult
    # dog. cat: TP (recall 1/2, precision 1) then FP -> AP 50; dog: its only non-difficult
    # box found -> AP 100 (were <difficult>1 ignored, the dog AP would be 50).
    partial = _predict(
        evaluator,
        dicts,
        keep=lambda i, j: i == 0 or (i == 2 and j == 0),
        extra=[(2, 0, 0.5, [60.0, 30.0, 75.0, 45.0])],
    )
    assert partial["AP50"] == pytest.approx(75.0)


def test_trainer_picks_the_tolerant_evaluator(tmp_path):
    from detectron2.config import get_cfg

    from soco_d2.engine.trainer import Trainer

    root = write_voc(tmp_path / "t", LABELIMG_OBJECTS, tags=False)
    name = unique_name("labelimg")
    register_voc_folder(name, root, "trainval")
    evaluator = Trainer.build_evaluator(get_cfg(), name)
    assert type(evaluator) is VOCDetectionEvaluator
