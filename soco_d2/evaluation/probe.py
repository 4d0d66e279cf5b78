"""A frozen-feature check of detector weights before spending a fine-tune on them.

The detector's own box head (FPN) or res5 head (C4) embeds every ground-truth box of a labeled
dataset; a closed-form ridge classifier fit on one split's boxes is scored on another's. Next
to the accuracy it reports the effective rank of the standardized box features and their mean
L2 norm: a pretraining that degenerated shows a collapsed rank or a box head whose output is
far larger than a random init's, which fine-tuning then has to undo.

    from soco_d2.evaluation.probe import probe_weights
    probe_weights(cfg, ["", "pretrain/model_converted.pkl"], "soco_demo_train", "soco_demo_val")
"""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Boxes

__all__ = [
    "box_features",
    "ridge_probe",
    "effective_rank",
    "build_with_weights",
    "probe_weights",
]


@torch.no_grad()
def box_features(
    models: Sequence[torch.nn.Module], dataset_dicts: List[Dict], cfg, batch_size: int = 4
) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Head features of every ground-truth box under each model, in eval mode.

    The images are read and resized once, batch by batch, and run through every model, so
    comparing several weights costs one pass over the data and holds one batch of images.

    Args:
        models: ``GeneralizedRCNN`` s with ``StandardROIHeads`` (``box_head``) or
            ``Res5ROIHeads`` (``res5``), all built from ``cfg``.
        dataset_dicts: detectron2 dataset dicts with ``annotations``.
        cfg: the detectors' config (input format and test size).
        batch_size: images per forward.

    Returns:
        per model a (B, D) float tensor of features, and the (B,) int64 class ids, in dataset
        order.
    """
    mapper = DatasetMapper(
        cfg,
        is_train=True,  # keeps the annotations; augmentations are only the test resize
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
        use_instance_mask=False,
        recompute_boxes=False,
    )
    for model in models:
        model.eval()
    feats: List[List[torch.Tensor]] = [[] for _ in models]
    labels: List[int] = []
    for i in range(0, len(dataset_dicts), batch_size):
        batch = [mapper(d) for d in dataset_dicts[i : i + batch_size]]
        batch = [d for d in batch if len(d["instances"])]
        if not batch:
            continue
        for model, out in zip(models, feats):
            out.append(_head_features(model, batch).float().cpu())
        labels += [c for d in batch for c in d["instances"].gt_classes.tolist()]
    if not labels:
        raise ValueError("no image with ground-truth boxes in the dataset")
    return [torch.cat(f) for f in feats], torch.tensor(labels, dtype=torch.int64)


def _head_features(model: torch.nn.Module, batch: List[Dict]) -> torch.Tensor:
    """(B, D) box-head (FPN) or pooled res5 (C4) features of the batch's ground-truth boxes."""
    heads = model.roi_heads
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    boxes = [Boxes(d["instances"].gt_boxes.tensor.to(model.device)) for d in batch]
    levels = [features[f] for f in heads.in_features]
    if hasattr(heads, "box_head"):
        return heads.box_head(heads.box_pooler(levels, boxes)).flatten(1)
    if hasattr(heads, "res5"):
        return heads._shared_roi_transform(levels, boxes).mean(dim=(2, 3))
    raise TypeError(f"{type(heads).__name__} has neither box_head nor res5")


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


def build_with_weights(cfg, path: str, trust_pickle: bool = False) -> torch.nn.Module:
    """The model of ``cfg``, built right after ``torch.manual_seed(0)`` (so the random init and
    the layers a weights file leaves out are the same for every call), with ``path`` loaded
    unless it is "" (random init). A ``.pkl`` is read without running pickled code unless
    ``trust_pickle`` (``soco_d2.checkpoint.RestrictedCheckpointer``)."""
    from soco_d2.checkpoint import RestrictedCheckpointer

    torch.manual_seed(0)
    model = build_model(cfg)
    if path:
        RestrictedCheckpointer(model, trust_pickle=trust_pickle).load(path)
    return model


def probe_weights(
    cfg, weights: Sequence[str], train_dataset: str, test_dataset: str, trust_pickle: bool = False
) -> List[Dict[str, float]]:
    """Build the detector of ``cfg`` once per entry of ``weights`` ("" = random init), load it,
    and probe all of them over one pass of each dataset.

    Every model comes from :func:`build_with_weights`, so the random init and the layers a
    weights file leaves out are the same for every entry and every call.

    Returns:
        per weights entry: ``probe_accuracy`` (ridge on box features, train -> test),
        ``effective_rank`` and ``feature_l2`` (mean L2 norm) of the test boxes' features, and
        the box counts.
    """
    models = [build_with_weights(cfg, path, trust_pickle) for path in weights]
    x_train, y_train = box_features(models, DatasetCatalog.get(train_dataset), cfg)
    x_test, y_test = box_features(models, DatasetCatalog.get(test_dataset), cfg)
    return [
        {
            "probe_accuracy": ridge_probe(tr, y_train, te, y_test),
            "effective_rank": effective_rank(te),
            "feature_l2": float(te.norm(dim=1).mean()),
            "train_boxes": int(len(y_train)),
            "test_boxes": int(len(y_test)),
        }
        for tr, te in zip(x_train, x_test)
    ]
