#!/usr/bin/env python
"""Pretrain with any method (its config names META_ARCHITECTURE) or fine-tune a detector with
soco_d2: one Trainer for both.

Usage (detectron2's arguments; KEY VALUE pairs override the config):
    tools/train_net.py --config-file configs/pretrain/soco_R50_FPN_100ep.yaml \\
        [--num-gpus 8 --num-machines 2 --machine-rank R --dist-url tcp://HOST:PORT] \\
        [--dist-timeout SECONDS] [--threads-per-process N] \\
        [--resume] [--eval-only] [KEY VALUE ...]

``--num-gpus`` is the number of processes per machine: GPUs with CUDA, else CPU processes
over gloo (``--dist-url auto`` picks a free local port). ``soco_d2.engine.launch`` starts them;
a failed process ends the whole command with a non-zero status naming its rank, and
``--resume`` continues from ``OUTPUT_DIR/last_checkpoint``. See docs/distributed.md.

torchrun starts it too, one process per rank, and gives the counts itself:
    torchrun --nproc_per_node N [--nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT] \\
        [--max-restarts K] tools/train_net.py --config-file CONFIG [KEY VALUE ...]
Each process joins one process group over ``env://``; a group that torchrun restarts resumes
from ``OUTPUT_DIR/last_checkpoint`` without ``--resume``.
"""
import logging
import sys
from typing import Optional, Sequence

from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils.logger import setup_logger

import soco_d2  # noqa: F401  (registers meta-architectures and datasets)
from soco_d2.checkpoint import RestrictedCheckpointer
from soco_d2.engine import Trainer, setup_cfg
from soco_d2.engine.launch import add_launch_arguments, launch, resolve_timeout
from soco_d2.engine.torchrun import restart_count
from soco_d2.utils.parent import stop_with_parent


def main(args):
    """One training (or evaluation) process; runs in every rank."""
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    restarts = restart_count()
    if restarts and not args.resume:
        # torchrun reran this command after a failure: continue the run it had started
        logging.getLogger("detectron2").info(
            "torchrun restart %d: resuming from %s/last_checkpoint", restarts, cfg.OUTPUT_DIR
        )
        args.resume = True
    trust = getattr(args, "trust_pickle", False)  # --trust-pickle, for .pkl MODEL.WEIGHTS
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = RestrictedCheckpointer(model, save_dir=cfg.OUTPUT_DIR, trust_pickle=trust)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.checkpointer.trust_pickle = trust
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    """detectron2's training arguments, the launch flags, and ``--trust-pickle``."""
    parser = add_launch_arguments(default_argument_parser())
    parser.add_argument(
        "--trust-pickle", action="store_true",
        help="read a .pkl MODEL.WEIGHTS with unrestricted unpickling, which runs any code the "
        "file names (docs/checkpoints.md); only for files you trust",
    )
    return parser


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``) and launch :func:`main` in every process."""
    args = get_parser().parse_args(argv)
    stop_with_parent()  # started by the pipeline: end with it, even if it is SIGKILLed
    # This process only launches: its log is the launcher's (workers set up their own).
    setup_logger(name="soco_d2.engine.launch", abbrev_name="launch")
    logging.getLogger("soco_d2.engine.launch").info("Command line arguments: %s", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        timeout=resolve_timeout(args.dist_timeout),
        num_threads=args.threads_per_process,
    )


if __name__ == "__main__":
    cli(sys.argv[1:])
