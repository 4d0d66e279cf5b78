#!/usr/bin/env python
"""Convert a pretraining checkpoint into detectron2 weights (.pkl, matching_heuristics).

Usage:
    tools/convert_pretrained.py IN OUT [--arch auto|fpn|c4] [--layout soco_d2|soco_official|moco]
        [--groups backbone,fpn,box_head]

IN is a soco_d2 pretraining checkpoint (``model_final.pth``), an official SoCo checkpoint
(``module.encoder/neck/head``) or a MoCo-style ResNet checkpoint (``module.encoder_q``).
OUT loads with ``MODEL.WEIGHTS OUT`` in any detectron2 config of the matching architecture.
"""
import argparse
import sys

from soco_d2.checkpoint import (
    GROUPS,
    LAYOUTS,
    UnknownLayoutError,
    convert_checkpoint,
    parse_groups,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="pretraining checkpoint (.pth/.pkl)")
    parser.add_argument("output", help="detectron2 weights to write (.pkl)")
    parser.add_argument(
        "--arch",
        default="auto",
        choices=["auto", "fpn", "c4"],
        help="detector the keys are named for (auto: fpn if the input has FPN keys)",
    )
    parser.add_argument(
        "--layout", default=None, choices=[lay.name for lay in LAYOUTS], help="skip detection"
    )
    parser.add_argument(
        "--groups",
        default=",".join(GROUPS),
        help="comma-separated groups to transfer (default: all); the others stay random in "
        "the detector",
    )
    args = parser.parse_args(argv)
    try:
        groups = parse_groups(args.groups)
        result = convert_checkpoint(
            args.input, args.output, layout=args.layout, arch=args.arch, groups=groups
        )
    except (UnknownLayoutError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"layout: {result.layout}, detector: {result.arch}")
    for group, n in result.counts.items():
        note = "" if group in groups else " (not transferred)"
        print(f"  {group:<9} {n:5d} tensors{note}")
    print(f"  dropped   {len(result.dropped):5d} tensors (target, projector, predictor, ...)")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
