#!/usr/bin/env python
"""Probe detector weights on frozen box features: ridge accuracy, effective rank, feature scale.

    tools/probe_features.py --config-file configs/demo/mask_rcnn_R18_FPN_demo.yaml \
        --weights demo_output/pretrain/model_converted.pkl [--weights ""] [KEY VALUE ...]

Each ``--weights`` ("" = random init) is probed on the config's DATASETS.TRAIN[0] -> TEST[0]
ground-truth boxes (``--train``/``--test`` override); one JSON line per weights file. Minutes on
a CPU for the demo data, against a fine-tune's: a check before spending one.
"""
import json

import soco_d2.finetune  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from soco_d2.evaluation.probe import probe_weights
from soco_d2.tools._weights_cli import weights_cli


def main(argv=None) -> None:
    def own_flags(parser):
        parser.add_argument("--train", default=None, help="dataset the probe is fit on")
        parser.add_argument("--test", default=None, help="dataset the probe is scored on")

    args, cfg = weights_cli(__doc__.split("\n")[0], "detector (fine-tuning) config", argv,
                            own_flags)
    train = args.train or cfg.DATASETS.TRAIN[0]
    test = args.test or cfg.DATASETS.TEST[0]
    results = probe_weights(cfg, args.weights, train, test, args.trust_pickle)
    for weights, result in zip(args.weights, results):
        print(json.dumps({"weights": weights or "random init", "train": train, "test": test,
                          **{k: round(v, 4) if isinstance(v, float) else v
                             for k, v in result.items()}}))


if __name__ == "__main__":
    main()
