#!/usr/bin/env python
"""Pretrain, convert, fine-tune and evaluate in one resumable command.

    tools/pipeline.py --pretrain-config A --finetune-config B [--inits soco,scratch,NAME=PATH]
        [--seeds 3] --output DIR [--pretrain-opts KEY VALUE ...] [--finetune-opts KEY VALUE ...]
    tools/pipeline.py --preset demo --output demo_output            # `make demo`
    tools/pipeline.py --preset bench-transfer --output bench_out    # `make bench-transfer`

Rerun the same command after an interruption: finished stages are skipped, an interrupted
training continues from its last checkpoint. See soco_d2/pipeline.py for the output layout.
"""
import argparse
import dataclasses
import logging
import sys

from soco_d2.checkpoint import parse_groups
from soco_d2.pipeline import PRESETS, PipelineSpec, run_pipeline


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="fill in configs, inits, seeds, data")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--pretrain-config", help="SoCo pretraining YAML")
    p.add_argument("--finetune-config", help="detector fine-tuning YAML")
    p.add_argument("--inits", help="comma-separated: soco, scratch, NAME=CHECKPOINT")
    p.add_argument("--seeds", type=int, help="number of fine-tune seeds (0..N-1)")
    p.add_argument("--proposals", nargs=2, metavar=("IMAGE_DIR", "CACHE"),
                   help="run selective search on IMAGE_DIR into CACHE unless CACHE exists")
    p.add_argument("--transfer", help="comma-separated groups the conversions keep "
                   "(backbone,fpn,box_head; default: the preset's, else all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--pretrain-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides of the pretraining config")
    p.add_argument("--finetune-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides of the fine-tuning config")
    return p


def build_spec(args: argparse.Namespace) -> PipelineSpec:
    fields = PRESETS[args.preset]() if args.preset else {}
    if args.pretrain_config:
        fields["pretrain_config"] = args.pretrain_config
    if args.finetune_config:
        fields["finetune_config"] = args.finetune_config
    if args.inits:
        fields["inits"] = [s.strip() for s in args.inits.split(",") if s.strip()]
    if args.seeds:
        fields["seeds"] = list(range(args.seeds))
    if args.proposals:
        fields["proposals"] = tuple(args.proposals)
    if args.transfer:
        try:
            fields["transfer"] = parse_groups(args.transfer)
        except ValueError as e:
            raise SystemExit(f"error: --transfer: {e}")
    spec = PipelineSpec(
        output=args.output,
        threads=args.threads,
        plots=not args.no_plots,
        pretrain_opts=list(args.pretrain_opts),
        finetune_opts=list(args.finetune_opts),
        **fields,
    )
    if not spec.finetune_config:
        raise SystemExit("error: --finetune-config (or --preset) is required")
    if "soco" in spec.inits and not spec.pretrain_config:
        raise SystemExit("error: init 'soco' needs --pretrain-config (or --preset)")
    for opts in (spec.pretrain_opts, spec.finetune_opts):
        if len(opts) % 2:
            raise SystemExit(f"error: overrides must be KEY VALUE pairs, got {opts}")
    return spec


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = build_spec(get_parser().parse_args(argv))
    print("[pipeline] " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(spec).items()))
    run_pipeline(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
