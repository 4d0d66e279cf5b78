"""Tiny detectron2 detectors and checkpoints in foreign key layouts, built for the tests."""
import importlib.util
import os
import re

import torch
from detectron2.modeling import build_model

from _configs import tiny_detector_cfg


def build_detector(arch: str = "fpn", depth: int = 18, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(tiny_detector_cfg(arch, depth))
    # randomise BN statistics too, so a stats mix-up would fail an equality check
    for name, buf in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buf.uniform_(0.5, 1.5)
    return model


def transferred_keys(state, arch: str):
    """detectron2 keys a converted checkpoint must provide for this architecture."""
    if arch == "fpn":
        prefixes = ("backbone.", "roi_heads.box_head.")
    else:
        prefixes = ("backbone.", "roi_heads.res5.")
    return {k for k in state if k.startswith(prefixes)}


def _torchvision_resnet_name(key: str) -> str:
    """detectron2 ResNet key without its prefix -> torchvision ResNet key."""
    key = key.replace("stem.conv1.norm.", "bn1.").replace("stem.conv1.", "conv1.")
    key = re.sub(r"^res(\d)", lambda m: f"layer{int(m.group(1)) - 1}", key)
    key = key.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
    return re.sub(r"conv(\d)\.norm\.", r"bn\1.", key)


def to_official_soco(state, arch: str):
    """Rename a detectron2 state dict into hologerry/SoCo names (inverse of the official map)."""
    out = {}
    for k, v in state.items():
        if k.startswith(("backbone.bottom_up.", "roi_heads.res5.")) or (
            arch == "c4" and k.startswith("backbone.")
        ):
            sub = re.sub(r"^(backbone\.bottom_up\.|backbone\.|roi_heads\.)", "", k)
            out["module.encoder." + _torchvision_resnet_name(sub)] = v
        elif k.startswith("backbone.fpn_"):
            m = re.match(r"backbone\.fpn_(lateral|output)(\d)\.(norm\.)?(.+)", k)
            kind = "lateral_convs" if m.group(1) == "lateral" else "fpn_convs"
            part = "bn" if m.group(3) else "conv"
            out[f"module.neck.{kind}.{int(m.group(2)) - 2}.{part}.{m.group(4)}"] = v
        elif k.startswith("roi_heads.box_head."):
            sub = re.sub(r"conv(\d)\.norm\.", r"bn\1.", k[len("roi_heads.box_head.") :])
            out["module.head." + sub] = v
    # parts the official model has that do not transfer
    out["module.projector.linear1.weight"] = torch.randn(8, 4)
    out["module.predictor.linear1.weight"] = torch.randn(8, 4)
    out["module.encoder_k.conv1.weight"] = torch.randn(2, 3, 1, 1)
    if arch == "c4":
        out["module.encoder.fc1.weight"] = torch.randn(8, 8)
    return out


def to_moco(state):
    """Rename a detectron2 C4 ResNet into a MoCo ``module.encoder_q`` checkpoint."""
    out = {}
    for k, v in state.items():
        if k.startswith(("backbone.", "roi_heads.res5.")):
            sub = re.sub(r"^(backbone\.|roi_heads\.)", "", k)
            out["module.encoder_q." + _torchvision_resnet_name(sub)] = v
            out["module.encoder_k." + _torchvision_resnet_name(sub)] = v + 1
    out["module.encoder_q.fc.0.weight"] = torch.randn(8, 8)
    out["module.encoder_q.fc.2.bias"] = torch.randn(4)
    out["module.queue"] = torch.randn(4, 16)
    return out


def build_plain_resnet(depth: int = 18, seed: int = 0):
    """The ResNet a neck-free method (MoCo v2, DenseCL, DetCo) pretrains: detectron2's
    ``build_resnet_backbone`` with res5, at the widths of ``_configs.tiny_detector_cfg``.

    Returns:
        its state dict (``stem.*``, ``res2..res5.*``), BN statistics randomised.
    """
    from detectron2.modeling import build_backbone

    cfg = tiny_detector_cfg("c4", depth)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    torch.manual_seed(seed)
    state = build_backbone(cfg).state_dict()
    for name, buf in state.items():
        if name.endswith(("running_mean", "running_var")):
            buf.uniform_(0.5, 1.5)
    return state


def to_torchvision(plain_state):
    """A plain detectron2 ResNet state dict under torchvision names, with a classifier."""
    out = {_torchvision_resnet_name(k): v for k, v in plain_state.items()}
    out["fc.weight"] = torch.randn(10, 8)
    out["fc.bias"] = torch.randn(10)
    return out


def to_densecl_full(plain_state):
    """A full DenseCL training checkpoint (mmcv runner) whose ResNet is ``plain_state``.

    Query ResNet ``encoder_q.0.*`` and its copy ``backbone.*`` hold the same values; the key
    network is shifted so that taking it would fail an equality check.
    """
    tv = {_torchvision_resnet_name(k): v for k, v in plain_state.items()}
    state = {"queue": torch.randn(8, 16), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    state.update({"queue2": torch.randn(8, 16), "queue2_ptr": torch.zeros(1, dtype=torch.long)})
    for k, v in tv.items():
        state["encoder_q.0." + k] = v
        state["encoder_k.0." + k] = v + 1 if v.is_floating_point() else v
        state["backbone." + k] = v.clone()
    for net in ("encoder_q", "encoder_k"):
        state[f"{net}.1.mlp.0.weight"] = torch.randn(16, 8)
        state[f"{net}.1.mlp2.0.weight"] = torch.randn(16, 8, 1, 1)
    meta = {"epoch": 200, "iter": 1000, "mmcv_version": "0.4.3", "time": "Mon Jan  1 2021"}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}
    return {"meta": meta, "state_dict": state, "optimizer": optimizer}


def to_plugin_plain_resnet(plain_state):
    """What DetectionCheckpointer saves for a plugin run of a neck-free ResNet method: online
    ``backbone.*``, its EMA ``target.backbone.*``, a queue and a method head."""
    model = {"backbone." + k: v for k, v in plain_state.items()}
    for k, v in plain_state.items():
        model["target.backbone." + k] = v + 3.0 if v.is_floating_point() else v
    model["queue"] = torch.randn(8, 16)
    model["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    model["global_head.0.weight"] = torch.randn(16, 8)
    model["dense_head.0.weight"] = torch.randn(16, 8, 1, 1)
    return {"model": model, "iteration": 10, "optimizer": {}}


def expected_backbone(plain_state, arch: str):
    """detectron2 detector key -> source tensor, for a plain ResNet placed in ``arch``."""
    out = {}
    for k, v in plain_state.items():
        if arch == "fpn":
            out["backbone.bottom_up." + k] = v
        else:
            out[("roi_heads." if k.startswith("res5.") else "backbone.") + k] = v
    return out


def load_cli():
    """``tools/convert_pretrained.py`` as a module, so its ``main(argv)`` runs in-process."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(repo, "tools", "convert_pretrained.py")
    spec = importlib.util.spec_from_file_location("convert_pretrained_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
