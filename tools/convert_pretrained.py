#!/usr/bin/env python
"""Convert a pretraining checkpoint into detectron2 weights (.pkl, matching_heuristics).

Usage:
    tools/convert_pretrained.py IN OUT [--arch auto|fpn|c4|vitdet] [--layout NAME]
        [--groups backbone,fpn,box_head] [--config-file FT_CONFIG [KEY VALUE ...]]

IN is a soco_d2 pretraining checkpoint (``model_final.pth``, any method), an official SoCo,
MoCo or DenseCL checkpoint, or a bare torchvision ResNet (DenseCL/DetCo exports, torchvision's
supervised weights); the layout is detected unless --layout names it (see --help for the names).
OUT loads with ``MODEL.WEIGHTS OUT`` in any detectron2 config of the matching architecture.

With --config-file the fine-tuning detector is built from that config (plus KEY VALUE
overrides): its architecture decides --arch, every converted tensor must fit one of its
parameters, and its keys left at their initialisation are listed per group. OUT is only written
when that check passes.
"""
import argparse
import sys

from soco_d2.checkpoint import (
    GROUPS,
    DetectorMismatchError,
    UnknownLayoutError,
    build_detector_state,
    check_against_detector,
    convert_state_dict,
    format_counts,
    format_detector_report,
    infer_arch,
    layout_names,
    load_detector_cfg,
    load_state_dict,
    parse_groups,
    save_detectron2_weights,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="pretraining checkpoint (.pth/.pth.tar/.pkl)")
    parser.add_argument("output", help="detectron2 weights to write (.pkl)")
    parser.add_argument(
        "--arch",
        default="auto",
        choices=["auto", "fpn", "c4", "vitdet"],
        help="detector the keys are named for (auto: from --config-file, else fpn if the input "
        "has FPN keys, else c4)",
    )
    parser.add_argument("--layout", default=None, choices=layout_names(), help="skip detection")
    parser.add_argument(
        "--groups",
        default=",".join(GROUPS),
        help="comma-separated groups to transfer (default: all); the others stay random in "
        "the detector",
    )
    parser.add_argument(
        "--config-file",
        nargs="+",
        default=None,
        metavar=("FT_CONFIG", "KEY VALUE"),
        help="fine-tuning config to check the weights against, then its overrides (put it last)",
    )
    args = parser.parse_args(argv)
    config_file, opts = None, []
    if args.config_file:
        config_file, *opts = args.config_file
    try:
        groups = parse_groups(args.groups)
        arch, detector = args.arch, None
        if config_file is not None:
            cfg = load_detector_cfg(config_file, opts)
            try:
                cfg_arch = infer_arch(cfg)
            except ValueError:  # not a ResNet detector (a ViT): the layout names its keys
                cfg_arch = arch
            if arch not in ("auto", cfg_arch):
                raise ValueError(f"--arch {arch} but {config_file} builds a {cfg_arch} detector")
            arch, detector = cfg_arch, build_detector_state(cfg)
        result = convert_state_dict(
            load_state_dict(args.input), layout=args.layout, arch=arch, groups=groups
        )
        report = None if detector is None else check_against_detector(result, detector)
        save_detectron2_weights(result, args.output)
    except (UnknownLayoutError, DetectorMismatchError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"layout: {result.layout}, detector: {result.arch}")
    for line in format_counts(result):
        print("  " + line)
    if report is not None:
        print(f"detector of {config_file} (loaded / left at initialisation):")
        for line in format_detector_report(report):
            print("  " + line)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
