"""Check converted weights against the detector that will load them.

``DetectionCheckpointer`` loads whatever keys match and only logs the rest, so weights named for
the wrong architecture or depth fine-tune from a random backbone without an error. The check
here makes that an error before the weights are written, and counts the detector tensors each
group leaves at their initialisation.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from detectron2.config import CfgNode, get_cfg

from soco_d2.config import add_ssl_config

from .convert import GROUPS, ConversionResult

__all__ = [
    "DetectorMismatchError",
    "build_detector_state",
    "check_against_detector",
    "detector_group",
    "format_detector_report",
    "infer_arch",
    "load_detector_cfg",
]


# How many key names an error message or report line shows.
_SHOW = 6


class DetectorMismatchError(ValueError):
    """Converted weights do not fit the target detector (absent keys, wrong shapes, nothing)."""


def infer_arch(cfg: CfgNode) -> str:
    """The converter architecture of the detector a config builds.

    Args:
        cfg: a detectron2 config.

    Returns:
        ``"fpn"`` when ``MODEL.BACKBONE.NAME`` builds an FPN, ``"c4"`` for a plain ResNet,
        ``"vitdet"`` for a ViT backbone (``build_vit_sfp_backbone``, ``build_vit_backbone``).

    Raises:
        ValueError: for another backbone, naming MODEL.BACKBONE.NAME.
    """
    name = cfg.MODEL.BACKBONE.NAME
    if "vit" in name.lower():
        return "vitdet"
    if "fpn" in name.lower():
        return "fpn"
    if "resnet" in name.lower():
        return "c4"
    raise ValueError(
        f"MODEL.BACKBONE.NAME={name!r} is neither a ResNet-FPN nor a plain ResNet backbone; "
        "the converter cannot tell its architecture (pass arch='fpn' or 'c4')"
    )


def load_detector_cfg(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """The fine-tuning config at ``config_file`` with ``KEY VALUE`` overrides, plugin keys
    included, without registering datasets.

    Args:
        config_file: a YAML config (``_BASE_`` chains are followed).
        opts: flat ``[KEY, VALUE, ...]`` overrides.

    Returns:
        the config (frozen).
    """
    opts = list(opts)
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs, got {opts}")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    try:
        # only the model is built from it: no dataset is registered or counted, and the
        # schedule (epochs -> iterations) is left unresolved
        cfg = add_ssl_config(get_cfg())
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(opts)
        cfg.freeze()
        return cfg
    except (KeyError, AssertionError) as e:
        # yacs reports an unknown key in the file (KeyError) or the overrides (AssertionError)
        raise ValueError(f"{config_file}: {e.args[0] if e.args else e}") from e


def build_detector_state(cfg: CfgNode) -> Dict[str, torch.Tensor]:
    """The state dict of a freshly built detector for ``cfg``, built on CPU.

    Args:
        cfg: a detectron2 config (e.g. from :func:`load_detector_cfg`).

    Returns:
        detector key -> tensor.
    """
    # the plugin's heads (Res5ROIHeadsExtraNorm) are registered: importing this package ran
    # soco_d2/__init__.py
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg).state_dict()


def detector_group(key: str) -> Optional[str]:
    """The group of :data:`GROUPS` a detector key belongs to, None for the rest (RPN, box
    predictor, mask head, and the extra norm a C4 fine-tune appends to res5).

    ``backbone.bottom_up.*`` (FPN), ``backbone.*`` and ``roi_heads.res5.*`` (C4) and
    ``backbone.net.*`` (ViTDet) are backbone; FPN levels and ViTDet's simple feature pyramid
    (``backbone.simfp_*``) are fpn.
    """
    if key.startswith("roi_heads.res5.norm."):
        return None  # Res5ROIHeadsExtraNorm's norm: a fine-tuning addition, never pretrained
    if key.startswith(("backbone.fpn_", "backbone.simfp_", "backbone.top_block.")):
        return "fpn"
    if key.startswith("roi_heads.box_head."):
        return "box_head"
    return "backbone" if key.startswith(("backbone.", "roi_heads.res5.")) else None


def _detector_arch(keys: Sequence[str]) -> Optional[str]:
    if any(k.startswith("backbone.bottom_up.") for k in keys):
        return "fpn"
    if any(k.startswith(("backbone.res", "backbone.stem.")) for k in keys):
        return "c4"
    return None  # another backbone: only key-by-key checks apply


def _is_bookkeeping(key: str) -> bool:
    # BatchNorm's step counter: absent from FrozenBN detectors, carries nothing learned
    return key.endswith(".num_batches_tracked")


def _sample(keys: Sequence[str]) -> str:
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def check_against_detector(
    result: ConversionResult, model_or_state_dict: Union[torch.nn.Module, Mapping]
) -> Dict:
    """Check that every converted tensor has a place of the same shape in the detector.

    Args:
        result: from ``convert_state_dict`` / ``convert_checkpoint``.
        model_or_state_dict: the target detector, or its state dict.

    Returns:
        ``{"arch", "layout", "loaded": {group: n}, "missing": {group: [detector keys]},
        "ignored": [converted keys]}``: ``loaded`` counts converted tensors per group of
        :data:`GROUPS`; ``missing`` lists, per group of GROUPS plus ``"other"`` (RPN, predictors,
        ...), the detector keys the weights leave at their initialisation; ``ignored`` holds
        converted BatchNorm step counters the detector has no buffer for. BatchNorm step
        counters are never listed as missing.

    Raises:
        DetectorMismatchError: the weights are named for the other architecture, match no key
            of the detector, or hold keys the detector lacks or has with another shape.
    """
    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
    else:
        state = model_or_state_dict
    det_arch = _detector_arch(list(state))
    if det_arch is not None and det_arch != result.arch:
        raise DetectorMismatchError(
            f"the weights are named for a {result.arch} detector but the target detector is "
            f"{det_arch}; convert with arch={det_arch!r} (--arch {det_arch})"
        )
    absent: List[str] = []
    ignored: List[str] = []
    shapes: List[str] = []
    loaded = {g: 0 for g in GROUPS}
    for key, value in result.model.items():
        if key not in state:
            (ignored if _is_bookkeeping(key) else absent).append(key)
        elif tuple(value.shape) != tuple(state[key].shape):
            shapes.append(
                f"{key}: weights {tuple(value.shape)}, detector {tuple(state[key].shape)}"
            )
        else:
            group = detector_group(key) or "other"
            loaded[group] = loaded.get(group, 0) + 1
    if not any(loaded.values()):
        raise DetectorMismatchError(
            f"layout {result.layout} matches nothing the target detector has: none of its "
            f"{len(result.model)} converted keys ({_sample(sorted(result.model))}) is a detector "
            f"key of the same shape (detector keys: {_sample(sorted(state))})"
        )
    if absent:
        lacking = [g for g in GROUPS if result.counts.get(g) and not loaded.get(g)]
        hint = (
            f"the detector has no {'/'.join(lacking)}: leave it out with groups (--groups)"
            if lacking
            else "check MODEL.RESNETS.DEPTH and the architecture"
        )
        raise DetectorMismatchError(
            f"{len(absent)} converted keys are not in the target detector ({hint}): "
            f"{_sample(sorted(absent))}"
        )
    if shapes:
        raise DetectorMismatchError(
            f"{len(shapes)} converted tensors do not fit the target detector's shapes (check "
            f"MODEL.RESNETS.DEPTH / widths, MODEL.FPN.OUT_CHANNELS, MODEL.ROI_BOX_HEAD.*): "
            f"{_sample(shapes)}"
        )
    missing: Dict[str, List[str]] = {g: [] for g in (*GROUPS, "other")}
    for key in sorted(state):
        if key not in result.model and not _is_bookkeeping(key):
            missing[detector_group(key) or "other"].append(key)
    return {
        "arch": result.arch,
        "layout": result.layout,
        "loaded": {g: loaded[g] for g in GROUPS},
        "missing": missing,
        "ignored": ignored,
    }


def format_detector_report(report: Dict) -> List[str]:
    """Lines for a :func:`check_against_detector` report: per group, tensors loaded and the
    detector keys left at their initialisation."""
    lines = []
    for group, keys in report["missing"].items():
        n = report["loaded"].get(group, 0)
        head = f"{group:<10} {n:4d} loaded, {len(keys):4d} missing"
        lines.append(head + (f": {_sample(keys)}" if keys and group != "other" else ""))
    return lines
