#!/usr/bin/env python
"""How many directions a SIM pretraining's tokens occupy: a check for (near) collapse.

    tools/sim_spectrum.py --config-file configs/demo/sim_vit_tiny_demo.yaml \
        --weights "" --weights output/demo/pretrain_sim/model_final.pth [--images 128]

Each ``--weights`` (a SIM checkpoint of this plugin; "" = random init) encodes the first
``--images`` images of the config's DATASETS.TRAIN[0], each resized whole to the second view's
size, and prints one JSON line with the eigenvalue spectrum (``top1``, ``top3`` shares,
``erank``; ``soco_d2/modeling/sim/unigrad.py::correlation_spectrum``) of the online encoder's
patch tokens and of the target's projected tokens. Seconds on a CPU at demo scale.
"""
import json

import cv2
import torch
from detectron2.data import DatasetCatalog, detection_utils
from detectron2.modeling import META_ARCH_REGISTRY

import soco_d2  # noqa: F401  (registers SIM and its config keys)
from soco_d2.evaluation.probe import build_with_weights
from soco_d2.tools._weights_cli import weights_cli


def load_views(cfg, count: int):
    """The first ``count`` images of DATASETS.TRAIN[0], resized to the second view's size."""
    size = int(cfg.INPUT.SSL.VIEW_SIZES[-1])
    views = []
    for record in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:count]:
        img = detection_utils.read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        views.append(torch.from_numpy(img.copy()).permute(2, 0, 1).float())
    if not views:
        raise ValueError(f"{cfg.DATASETS.TRAIN[0]} has no images")
    return views


def spectra(cfg, weights, views, trust_pickle: bool = False):
    """One ``{"weights", "encoder", "target"}`` dict per entry of ``weights``."""
    if not hasattr(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), "token_spectra"):
        raise ValueError(f"{cfg.MODEL.META_ARCHITECTURE} is not SIM: no token spectra")
    models = (build_with_weights(cfg, w, trust_pickle).eval() for w in weights)
    return [{"weights": w or "random init", **m.token_spectra(views)}
            for w, m in zip(weights, models)]


def main(argv=None) -> None:
    def own_flags(parser):
        parser.add_argument("--images", type=int, default=128, help="images encoded")

    args, cfg = weights_cli(__doc__.split("\n")[0], "the SIM pretraining config", argv,
                            own_flags)
    views = load_views(cfg, args.images)
    for row in spectra(cfg, args.weights, views, args.trust_pickle):
        print(json.dumps({k: {m: round(v, 4) for m, v in d.items()} if isinstance(d, dict) else d
                          for k, d in row.items()}))


if __name__ == "__main__":
    main()
