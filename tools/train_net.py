#!/usr/bin/env python
"""Pretrain (SoCo) or fine-tune a detector with soco_d2: one Trainer for both.

Usage (detectron2's arguments; KEY VALUE pairs override the config):
    tools/train_net.py --config-file configs/pretrain/soco_R50_FPN_100ep.yaml \\
        [--num-gpus 8 --num-machines 2 --machine-rank R --dist-url tcp://HOST:PORT] \\
        [--resume] [--eval-only] [KEY VALUE ...]

torch.distributed (via detectron2's ``launch``) runs the multi-GPU / multi-machine jobs; with
``--resume`` training continues from ``OUTPUT_DIR/last_checkpoint``.
"""
import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch

import soco_d2  # noqa: F401  (registers meta-architectures and datasets)
from soco_d2.engine import Trainer, setup_cfg


def main(args):
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    logging.getLogger(__name__).info("Command line arguments: %s", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
