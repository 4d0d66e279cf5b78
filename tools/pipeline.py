#!/usr/bin/env python
"""Pretrain, convert, fine-tune and evaluate in one resumable command.

    tools/pipeline.py --pretrain NAME=CONFIG [--pretrain NAME2=CONFIG2 ...]
        --finetune-config DETECTOR.yaml [--finetune-config INIT=OTHER_DETECTOR.yaml ...]
        [--inits NAME,NAME2,scratch,OTHER=CHECKPOINT] [--seeds 3] --output DIR
        [--unlabeled IMAGE_DIR] [--train NAME_OR_SPEC] [--test NAME_OR_SPEC]
        [--num-gpus N --num-machines M --machine-rank R --dist-url URL] [--threads T --jobs N]
        [--pretrain-opts KEY VALUE ...] [--finetune-opts KEY VALUE ...]
    tools/pipeline.py --preset demo --output demo_output                  # `make demo`
    tools/pipeline.py --preset bench-transfer --output bench_out          # `make bench-transfer`
    tools/pipeline.py --preset bench-methods --output bench_methods_out   # `make bench-methods`

Your own data, without config overrides: ``--unlabeled DIR`` (every pretraining trains on it;
selective search runs if a method uses proposals), ``--train`` / ``--test`` as a registered
dataset name or a spec ``coco:JSON:IMAGES`` / ``voc:DIR:SPLIT[:CLASS1,CLASS2,...]`` (class count
and masks are read from the data). ``--pretrain-config C`` is ``--pretrain soco=C``.

Rerun the same command after an interruption, or with more pretrainings or inits: finished
stages are skipped, an interrupted training continues from its last checkpoint. See
soco_d2/pipeline/__init__.py for the output layout.
"""
import argparse
import dataclasses
import logging
import re
import sys

from soco_d2.checkpoint import parse_groups
from soco_d2.pipeline import PRESETS, PipelineSpec, parse_named, resolve_inits, run_pipeline
from soco_d2.pipeline.stages import exit_on_sigterm


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="fill in configs, inits, seeds, data")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--pretrain", action="append", default=[], metavar="NAME=CONFIG",
                   help="a pretraining of this run (repeatable), fine-tuned as init NAME")
    p.add_argument("--pretrain-config", help="same as --pretrain soco=CONFIG")
    p.add_argument("--finetune-config", action="append", default=[], metavar="[INIT=]CONFIG",
                   help="detector YAML of every init, or INIT=CONFIG for one init (repeatable)")
    p.add_argument("--inits", help="comma-separated: pretraining names, scratch, NAME=CHECKPOINT "
                   "(default: every pretraining, then scratch)")
    p.add_argument("--seeds", type=int, help="number of fine-tune seeds (0..N-1)")
    p.add_argument("--unlabeled", metavar="IMAGE_DIR", help="pretraining images (a folder)")
    p.add_argument("--train", metavar="NAME_OR_SPEC", help="fine-tune training set")
    p.add_argument("--test", metavar="NAME_OR_SPEC", help="fine-tune evaluation set")
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
    given = [("soco", args.pretrain_config)] if args.pretrain_config else []
    given += [parse_named(text, "--pretrain") for text in args.pretrain]
    for name, config in given:
        pretrains[name] = config
    fields["pretrains"] = pretrains
    per_init, plain = {}, None
    for text in args.finetune_config:
        name, sep, config = text.partition("=")
        if sep and re.fullmatch(r"[A-Za-z0-9_-]+", name):  # INIT=CONFIG; a path has / or .
            per_init[name] = config.strip()
        else:
            plain = text
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
    for key in ("unlabeled", "train", "test"):
        if getattr(args, key):
            fields[key] = getattr(args, key)
    for key in ("threads", "jobs"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    return fields


def build_spec(args: argparse.Namespace) -> PipelineSpec:
    """The run's spec from parsed flags; every flag error is a SystemExit naming the flag."""
    try:
        spec = PipelineSpec(
            output=args.output,
            plots=not args.no_plots,
            pretrain_opts=list(args.pretrain_opts),
            finetune_opts=list(args.finetune_opts),
            launch_args=_launch_args(args),
            **_fields(args),
        )
        if not spec.finetune_config and not spec.finetune_configs:
            raise ValueError("--finetune-config (or --preset) is required")
        resolve_inits(spec)  # names, clashes, files: before anything runs
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    return spec


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    exit_on_sigterm()  # a killed pipeline stops its training subprocess, never orphans it
    spec = build_spec(get_parser().parse_args(argv))
    print("[pipeline] " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(spec).items()))
    run_pipeline(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
