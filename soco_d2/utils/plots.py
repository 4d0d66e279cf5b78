"""PNG plots a person would rather look at than read: training curves and prediction grids.

Curves come from detectron2's ``metrics.json`` (one JSON object per logged iteration);
predictions from the COCO evaluator's ``inference/coco_instances_results.json``, drawn with
detectron2's ``Visualizer`` next to the ground truth.
"""
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["load_metrics", "plot_training_curves", "plot_prediction_grid"]


def load_metrics(path: str) -> List[Dict]:
    """Rows of a detectron2 ``metrics.json`` that have an ``iteration``, sorted by it.

    A resumed run logs some iterations twice; the later line wins.
    """
    rows: Dict[int, Dict] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if "iteration" in row:
                rows[int(row["iteration"])] = row
    return [rows[i] for i in sorted(rows)]


def plot_training_curves(
    runs: Mapping[str, str],
    out_png: str,
    title: str = "",
    loss_keys: Optional[Sequence[str]] = None,
) -> Optional[str]:
    """Loss and learning-rate curves of one or more runs, with the weight drift of pretraining
    runs (``weight_drift`` in metrics.json) on a second axis of the learning-rate panel.

    Args:
        runs: label -> path of a ``metrics.json``; missing files are skipped.
        out_png: file to write.
        loss_keys: scalars to draw in the loss panel; default ``total_loss`` plus every
            ``loss_*`` key when there is a single run (several runs: ``total_loss`` only).

    Returns:
        ``out_png``, or None when no run had metrics.
    """
    data = {label: load_metrics(p) for label, p in runs.items() if os.path.isfile(p)}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    ax_drift = None
    for label, rows in data.items():
        keys = loss_keys
        if keys is None:
            keys = ["total_loss"]
            if len(data) == 1:
                keys += sorted({k for r in rows for k in r if k.startswith("loss_")})
        for key in keys:
            pts = [(r["iteration"], r[key]) for r in rows if key in r]
            if pts:
                x, y = zip(*pts)
                name = key if len(data) == 1 else f"{label} {key}"
                ax_loss.plot(x, y, label=name, lw=1.2)
        lr = [(r["iteration"], r["lr"]) for r in rows if "lr" in r]
        if lr:
            x, y = zip(*lr)
            ax_lr.plot(x, y, label=label, lw=1.2)
        drift = [(r["iteration"], r["weight_drift"]) for r in rows if "weight_drift" in r]
        if drift:  # pretraining runs (soco_d2.engine.WeightDriftHook)
            if ax_drift is None:
                ax_drift = ax_lr.twinx()
                ax_drift.set_ylabel("weight drift ||w - w0|| / ||w0|| (dashed)")
            x, y = zip(*drift)
            ax_drift.plot(x, y, ls="--", lw=1.2, label=f"{label} weight drift")
    ax_loss.set(xlabel="iteration", ylabel="loss", title="losses")
    title_lr = "learning rate" if ax_drift is None else "learning rate and weight drift"
    ax_lr.set(xlabel="iteration", ylabel="learning rate", title=title_lr)
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if ax_drift is not None:
        ax_drift.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def _predictions_by_image(results_json: str, score_thresh: float) -> Dict:
    with open(results_json) as f:
        preds = json.load(f)
    out: Dict = {}
    for p in preds:
        if p.get("score", 1.0) >= score_thresh:
            out.setdefault(p["image_id"], []).append(p)
    return out


def _scale(image: np.ndarray) -> float:
    """Upscale small images so that labels stay legible (fonts scale with the image)."""
    return max(1.0, 320.0 / max(image.shape[:2]))


def _draw_predictions(image: np.ndarray, preds: List[Dict], metadata) -> np.ndarray:
    from detectron2.utils.visualizer import Visualizer
    from pycocotools import mask as mask_util

    # results carry dataset category ids; class names are indexed by contiguous ids
    id_map = dict(metadata.get("thing_dataset_id_to_contiguous_id", {}))
    names = metadata.get("thing_classes", None)
    vis = Visualizer(image, metadata, scale=_scale(image))
    if not preds:
        return vis.output.get_image()
    boxes = np.array([p["bbox"] for p in preds], dtype=np.float32)
    boxes[:, 2:] += boxes[:, :2]  # XYWH -> XYXY
    labels = []
    for p in preds:
        cls = id_map.get(p["category_id"], p["category_id"])
        name = names[cls] if names and 0 <= cls < len(names) else str(p["category_id"])
        labels.append(f"{name} {p['score']:.0%}")
    masks = None
    if all("segmentation" in p for p in preds):
        masks = [mask_util.decode(p["segmentation"]).astype(bool) for p in preds]
    return vis.overlay_instances(boxes=boxes, labels=labels, masks=masks).get_image()


def plot_prediction_grid(
    dataset_name: str,
    predictions: Mapping[str, str],
    out_png: str,
    num_images: int = 6,
    score_thresh: float = 0.5,
) -> Optional[str]:
    """Ground truth and each run's predictions on the first images of a registered dataset.

    Args:
        dataset_name: a registered detectron2 dataset (the one the runs were evaluated on).
        predictions: row label -> ``coco_instances_results.json``; missing files are skipped.
        out_png: file to write; one row per label plus a ground-truth row, one column per image.
        score_thresh: detections below this score are not drawn.

    Returns:
        ``out_png``, or None when no predictions were found.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import Visualizer

    rows = {
        k: _predictions_by_image(p, score_thresh)
        for k, p in predictions.items()
        if os.path.isfile(p)
    }
    if not rows:
        return None
    dicts = DatasetCatalog.get(dataset_name)[:num_images]
    metadata = MetadataCatalog.get(dataset_name)
    fig, axes = plt.subplots(
        len(rows) + 1, len(dicts), figsize=(2.4 * len(dicts), 2.5 * (len(rows) + 1)), squeeze=False
    )
    for col, d in enumerate(dicts):
        image = read_image(d["file_name"], format="RGB")
        gt = Visualizer(image, metadata, scale=_scale(image)).draw_dataset_dict(d)
        axes[0, col].imshow(gt.get_image())
        for row, (label, preds) in enumerate(rows.items(), start=1):
            drawn = _draw_predictions(image, preds.get(d["image_id"], []), metadata)
            axes[row, col].imshow(drawn)
    for row, label in enumerate(["ground truth", *rows]):
        axes[row, 0].set_ylabel(label, fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
