"""A frozen-feature check of detector weights before spending a fine-tune on them.

The detector's own box head (FPN) or res5 head (C4) embeds every ground-truth box of a labeled
dataset; a closed-form ridge classifier fit on one split's boxes is scored on another's. Next
to the accuracy it reports the effective rank of the standardized box features and their mean
L2 norm: a pretraining that degenerated shows a collapsed rank or a box head whose output is
far larger than a random init's, which fine-tuning then has to undo.

    from soco_d2.utils.probe import probe_weights
    probe_weights(cfg, "pretrain/model_converted.pkl", "soco_demo_train", "soco_demo_val")
"""
from typing import Dict, List, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Boxes

__all__ = ["box_features", "ridge_probe", "effective_rank", "probe_weights"]


@torch.no_grad()
def box_features(
    model: torch.nn.Module, dataset_dicts: List[Dict], cfg, batch_size: int = 4
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Head features of every ground-truth box, in eval mode.

    Args:
        model: a ``GeneralizedRCNN`` with ``StandardROIHeads`` (``box_head``) or
            ``Res5ROIHeads`` (``res5``).
        dataset_dicts: detectron2 dataset dicts with ``annotations``.
        cfg: the detector's config (input format and test size).
        batch_size: images per forward.

    Returns:
        (B, D) float features and (B,) int64 class ids, in dataset order.
    """
    mapper = DatasetMapper(
        cfg,
        is_train=True,  # keeps the annotations; augmentations are only the test resize
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
        use_instance_mask=False,
        recompute_boxes=False,
    )
    model.eval()
    heads = model.roi_heads
    feats, labels = [], []
    items = [mapper(d) for d in dataset_dicts]
    items = [d for d in items if len(d["instances"])]
    for i in range(0, len(items), batch_size):
        batch = items[i : i + batch_size]
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        boxes = [Boxes(d["instances"].gt_boxes.tensor.to(model.device)) for d in batch]
        levels = [features[f] for f in heads.in_features]
        if hasattr(heads, "box_head"):
            h = heads.box_head(heads.box_pooler(levels, boxes)).flatten(1)
        elif hasattr(heads, "res5"):
            h = heads._shared_roi_transform(levels, boxes).mean(dim=(2, 3))
        else:
            raise TypeError(f"{type(heads).__name__} has neither box_head nor res5")
        feats.append(h.float().cpu())
        labels += [c for d in batch for c in d["instances"].gt_classes.tolist()]
    if not feats:
        raise ValueError("no image with ground-truth boxes in the dataset")
    return torch.cat(feats), torch.tensor(labels, dtype=torch.int64)


def ridge_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    l2: float = 10.0,
) -> float:
    """Accuracy of a one-vs-all ridge classifier (closed form, standardized features).

    Args:
        x_train, x_test: (B, D) features.
        y_train, y_test: (B,) class ids.
        l2: ridge penalty.

    Returns:
        fraction of test rows whose highest score is their class.
    """
    classes = torch.unique(y_train)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = ((x_train - mean) / std).double()
    b = ((x_test - mean) / std).double()
    targets = (y_train[:, None] == classes[None]).double()
    w = torch.linalg.solve(a.T @ a + l2 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ targets)
    predicted = classes[(b @ w).argmax(1)]
    return float((predicted == y_test).double().mean())


def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalized singular values of the standardized rows (1..D)."""
    z = ((x - x.mean(0)) / (x.std(0) + 1e-6)).double()
    s = torch.linalg.svdvals(z)
    p = s / s.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-30).log()).sum()))


def probe_weights(cfg, weights: str, train_dataset: str, test_dataset: str) -> Dict[str, float]:
    """Build the detector of ``cfg``, load ``weights`` ("" = random init) and probe it.

    Returns:
        ``probe_accuracy`` (ridge on box features, train -> test), ``effective_rank`` and
        ``feature_l2`` (mean L2 norm) of the test boxes' features, and the box counts.
    """
    model = build_model(cfg)
    if weights:
        DetectionCheckpointer(model).load(weights)
    x_train, y_train = box_features(model, DatasetCatalog.get(train_dataset), cfg)
    x_test, y_test = box_features(model, DatasetCatalog.get(test_dataset), cfg)
    return {
        "probe_accuracy": ridge_probe(x_train, y_train, x_test, y_test),
        "effective_rank": effective_rank(x_test),
        "feature_l2": float(x_test.norm(dim=1).mean()),
        "train_boxes": int(len(y_train)),
        "test_boxes": int(len(y_test)),
    }
