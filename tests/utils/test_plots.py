"""Plots: curves from a (resumed, partly cut) metrics.json and a prediction grid."""
import json

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_util

from soco_d2.utils.plots import load_metrics, plot_prediction_grid, plot_training_curves
from _data import write_grey_images


def _write_metrics(path, iters, offset=0.0):
    with open(path, "a") as f:
        for it in iters:
            f.write(json.dumps({"iteration": it, "total_loss": 2.0 / (it + 1) + offset,
                                "loss_v1_v2": 1.0 / (it + 1), "lr": 0.01 * it}) + "\n")


def test_load_metrics_dedups_resumed_iterations(tmp_path):
    p = tmp_path / "metrics.json"
    _write_metrics(p, [0, 19, 39])
    _write_metrics(p, [39, 59], offset=5.0)  # a resumed run logs iteration 39 again
    with open(p, "a") as f:
        f.write('{"iteration": 79, "total_')  # cut by a kill
    rows = load_metrics(str(p))
    assert [r["iteration"] for r in rows] == [0, 19, 39, 59]
    assert rows[2]["total_loss"] == 2.0 / 40 + 5.0  # the later line wins


def test_training_curves_png(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _write_metrics(a, range(0, 100, 10))
    _write_metrics(b, range(0, 100, 10), offset=1.0)
    out = plot_training_curves({"soco": str(a), "scratch": str(b), "none": "missing.json"},
                               str(tmp_path / "plots/curves.png"))
    img = cv2.imread(out)
    assert img is not None and img.shape[0] > 200 and img.std() > 5
    missing = {"x": str(tmp_path / "nothing.json")}
    assert plot_training_curves(missing, str(tmp_path / "n.png")) is None


def test_training_curves_draw_weight_drift_when_logged(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    plain, drift = tmp_path / "plain.json", tmp_path / "drift.json"
    _write_metrics(plain, range(0, 100, 10))
    _write_metrics(drift, range(0, 100, 10))
    rows = [json.loads(line) for line in open(drift)]
    with open(drift, "w") as f:
        for r in rows:
            f.write(json.dumps(dict(r, weight_drift=0.002 * r["iteration"])) + "\n")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_training_curves({"pre": str(plain)}, str(tmp_path / "plain.png"))
    plot_training_curves({"pre": str(drift)}, str(tmp_path / "drift.png"))
    assert len(figures[0].axes) == 2
    twin = figures[1].axes[2]  # the drift axis shares the learning-rate panel
    (line,) = twin.get_lines()
    assert list(line.get_ydata()) == [0.002 * i for i in range(0, 100, 10)]
    assert line.get_linestyle() == "--"


def test_prediction_grid_draws_gt_and_predictions(tmp_path):
    files = write_grey_images(str(tmp_path), [40, 80], height=64, width=64)
    name = "soco_test_plot_grid"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    dicts = [
        {"file_name": f, "image_id": i, "height": 64, "width": 64,
         "annotations": [{"bbox": [8, 8, 30, 30], "bbox_mode": 1, "category_id": 0}]}
        for i, f in enumerate(files)
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["disc", "star"],
                                  thing_dataset_id_to_contiguous_id={1: 0, 2: 1})
    mask = np.zeros((64, 64), np.uint8, order="F")
    mask[10:30, 10:30] = 1
    rle = mask_util.encode(mask)
    rle["counts"] = rle["counts"].decode()
    preds = [{"image_id": 0, "category_id": 2, "bbox": [10, 10, 20, 20], "score": 0.9,
              "segmentation": rle},
             {"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.1,
              "segmentation": rle}]
    pj = tmp_path / "coco_instances_results.json"
    pj.write_text(json.dumps(preds))
    out = plot_prediction_grid(name, {"soco": str(pj)}, str(tmp_path / "grid.png"))
    img = cv2.imread(out)
    assert img is not None and img.shape[0] > img.shape[1] * 0.8  # two rows of two images
    assert plot_prediction_grid(name, {"soco": "missing.json"}, str(tmp_path / "x.png")) is None
