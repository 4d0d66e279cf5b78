#!/usr/bin/env python
"""Pretrain, convert, fine-tune and evaluate in one resumable command.

    tools/pipeline.py --pretrain NAME=CONFIG [--pretrain NAME2=CONFIG2 ...]
        --finetune-config DETECTOR.yaml [--finetune-config INIT=OTHER_DETECTOR.yaml ...]
        [--inits NAME,NAME2,scratch,OTHER=CHECKPOINT] [--seeds 3] --output DIR
        [--unlabeled IMAGE_DIR] [--train NAME_OR_SPEC] [--test NAME_OR_SPEC]
        [--train-subset N|FRACTION [--subset-seed S]]
        [--num-gpus N --num-machines M --machine-rank R --dist-url URL] [--threads T --jobs N]
        [--pretrain-opts KEY VALUE ...] [--finetune-opts KEY VALUE ...] [--trust-pickle]
    tools/pipeline.py --preset demo --output demo_output                  # `make demo`
    tools/pipeline.py --preset bench-transfer --output bench_out          # `make bench-transfer`
    tools/pipeline.py --preset bench-methods --output bench_methods_out   # 12 labelled images
    tools/pipeline.py --preset bench-methods-fulllabel --output bench_full_out    # all 120

A CONFIG is a file, or a config shipped with soco_d2 named as in the repository
(``configs/demo/soco_R18_FPN_demo.yaml``), found the same from a checkout or an installed wheel.
Installed, the command is ``soco-d2-pipeline`` (or ``python -m soco_d2.tools.pipeline``).

Your own data, without config overrides: ``--unlabeled DIR`` (every pretraining trains on it;
selective search runs if a method uses proposals), ``--train`` / ``--test`` as a registered
dataset name or a spec ``coco:JSON:IMAGES`` / ``voc:DIR:SPLIT[:CLASS1,CLASS2,...]`` (class count
and masks are read from the data).

The low-label protocol: ``--train-subset 12`` (or ``0.1``) fine-tunes every init at every seed
on the same 12 images (a tenth) of the train set, drawn by ``--subset-seed`` (default 0) and
kept in ``DIR/data/train_subset.json``. Before any training the pipeline refuses a run whose
pretraining images hold a test image (same file bytes). ``results.md`` names the labelled set
and gives each verdict from per-seed differences (3 seeds needed).

Every ``--inits NAME=CHECKPOINT`` file is read without running pickled code before any stage; a
file holding more than weights is an error naming what it holds, and ``--trust-pickle`` reads
it anyway (only for files you trust; docs/checkpoints.md).

Rerun the same command after an interruption, or with more pretrainings or inits: finished
stages are skipped, an interrupted training continues from its last checkpoint. See
soco_d2/pipeline/__init__.py for the output layout.
"""
import argparse
import dataclasses
import logging
import re
import sys
from typing import List, Tuple

from soco_d2.checkpoint import UntrustedCheckpointError, parse_groups
from soco_d2.model_zoo import resolve_config
from soco_d2.pipeline import (
    PRESETS,
    Init,
    PipelineSpec,
    parse_named,
    resolve_inits,
    run_pipeline,
)
from soco_d2.pipeline.stages import exit_on_sigterm


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="fill in configs, inits, seeds, data")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--pretrain", action="append", default=[], metavar="NAME=CONFIG",
                   help="a pretraining of this run (repeatable), fine-tuned as init NAME")
    p.add_argument("--finetune-config", action="append", default=[], metavar="[INIT=]CONFIG",
                   help="detector YAML of every init, or INIT=CONFIG for one init (repeatable)")
    p.add_argument("--inits", help="comma-separated: pretraining names, scratch, NAME=CHECKPOINT "
                   "(default: every pretraining, then scratch)")
    p.add_argument("--seeds", type=int, help="number of fine-tune seeds (0..N-1)")
    p.add_argument("--unlabeled", metavar="IMAGE_DIR", help="pretraining images (a folder)")
    p.add_argument("--train", metavar="NAME_OR_SPEC", help="fine-tune training set")
    p.add_argument("--test", metavar="NAME_OR_SPEC", help="fine-tune evaluation set")
    p.add_argument("--train-subset", metavar="N|FRACTION",
                   help="low-label protocol: fine-tune on N images (an integer >= 1) or a "
                   "fraction in (0, 1] of the train set, the same for every init and seed")
    p.add_argument("--subset-seed", type=int, help="seed of the --train-subset draw (default: "
                   "the preset's, else 0); independent of the fine-tune seeds")
    p.add_argument("--proposals", nargs=2, metavar=("IMAGE_DIR", "CACHE"),
                   help="run selective search on IMAGE_DIR into CACHE unless CACHE exists")
    p.add_argument("--transfer", help="comma-separated groups the conversions keep "
                   "(backbone,fpn,box_head; default: the preset's, else all)")
    p.add_argument("--num-gpus", type=int, help="processes per machine of every training")
    p.add_argument("--num-machines", type=int, help="machines of every training")
    p.add_argument("--machine-rank", type=int, help="this machine's rank")
    p.add_argument("--dist-url", help="rendezvous URL of the training processes")
    p.add_argument("--threads", type=int, help="CPU threads of each training and evaluation "
                   "(default: the preset's, else 2)")
    p.add_argument("--jobs", type=int, help="fine-tunes run N at a time, with threads/N "
                   "threads each (default: the preset's, else 1)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read --inits NAME=CHECKPOINT files with unrestricted unpickling, which "
                   "runs any code a file names; only for files you trust")
    p.add_argument("--pretrain-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides of every pretraining config")
    p.add_argument("--finetune-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides of every fine-tuning config")
    return p


def _launch_args(args: argparse.Namespace) -> list:
    flags = (("--num-gpus", args.num_gpus), ("--num-machines", args.num_machines),
             ("--machine-rank", args.machine_rank), ("--dist-url", args.dist_url))
    return [str(v) for flag, value in flags if value is not None for v in (flag, value)]


def _fields(args: argparse.Namespace) -> dict:
    fields = PRESETS[args.preset]() if args.preset else {}
    pretrains = dict(fields.get("pretrains", {}))
    given = [parse_named(text, "--pretrain") for text in args.pretrain]
    for name, config in given:
        pretrains[name] = resolve_config(config)
    fields["pretrains"] = pretrains
    per_init, plain = {}, None
    for text in args.finetune_config:
        name, sep, config = text.partition("=")
        if sep and re.fullmatch(r"[A-Za-z0-9_-]+", name):  # INIT=CONFIG; a path has / or .
            per_init[name] = resolve_config(config.strip())
        else:
            plain = resolve_config(text)
    if plain:  # one detector for every init replaces the preset's choice per init
        fields["finetune_config"] = plain
    else:
        per_init = {**fields.get("finetune_configs", {}), **per_init}
    fields["finetune_configs"] = per_init
    if args.inits:
        fields["inits"] = [s.strip() for s in args.inits.split(",") if s.strip()]
    elif given and args.preset:
        # new pretrainings on top of a preset are compared too
        inits = list(fields.get("inits", []))
        fields["inits"] = inits + [n for n, _ in given if n not in inits]
    if args.seeds:
        fields["seeds"] = list(range(args.seeds))
    if args.proposals:
        fields["proposals"] = tuple(args.proposals)
    if args.transfer:
        fields["transfer"] = parse_groups(args.transfer)
    for key in ("unlabeled", "train", "test", "train_subset"):
        if getattr(args, key):
            fields[key] = getattr(args, key)
    for key in ("threads", "jobs", "subset_seed"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if args.subset_seed is not None and not fields.get("train_subset"):
        raise ValueError("--subset-seed: it seeds the --train-subset draw; give --train-subset")
    return fields


def build_spec(args: argparse.Namespace) -> PipelineSpec:
    """The run's spec from parsed flags; every flag error is a SystemExit naming the flag."""
    return _checked(args)[0]


def _checked(args: argparse.Namespace) -> Tuple[PipelineSpec, List[Init]]:
    """The spec and its resolved inits (resolving them is the check of names, clashes and
    files, before anything runs)."""
    try:
        spec = PipelineSpec(
            output=args.output,
            plots=not args.no_plots,
            trust_pickle=args.trust_pickle,
            pretrain_opts=list(args.pretrain_opts),
            finetune_opts=list(args.finetune_opts),
            launch_args=_launch_args(args),
            **_fields(args),
        )
        if not spec.finetune_config and not spec.finetune_configs:
            raise ValueError("--finetune-config (or --preset) is required")
        inits = resolve_inits(spec)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    return spec, inits


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    exit_on_sigterm()  # a killed pipeline stops its training subprocess, never orphans it
    spec, inits = _checked(get_parser().parse_args(argv))
    print("[pipeline] " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(spec).items()))
    try:
        run_pipeline(spec, inits)
    except UntrustedCheckpointError as e:  # raised by the checks, before any stage
        raise SystemExit(f"error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
