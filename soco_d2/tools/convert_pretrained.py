#!/usr/bin/env python
"""Convert a pretraining checkpoint into detectron2 weights (.pkl, matching_heuristics).

Usage:
    tools/convert_pretrained.py IN OUT [--arch auto|fpn|c4|vitdet|resnet] [--layout NAME]
        [--groups backbone,fpn,box_head] [--trust-pickle] [--config-file FT_CONFIG [KEY VALUE ...]]

IN is a soco_d2 pretraining checkpoint (``model_final.pth``, any method), an official SoCo,
MoCo or DenseCL checkpoint, or a bare torchvision ResNet (DenseCL/DetCo exports, torchvision's
supervised weights); the layout is detected unless --layout names it (see --help for the names).
OUT loads with ``MODEL.WEIGHTS OUT`` in any detectron2 config of the matching architecture.
Without --config-file, a checkpoint of a ResNet alone (MoCo v2, DenseCL, DetCo, SoCo C4) gets
names without a detector prefix (``--arch resnet``: ``stem.*``, ``res2.*``, as the official MoCo
converter writes them), which detectron2 loads into C4 and FPN detectors alike.

--to torchvision|timm writes the pretrained backbone for another framework instead (.pth, a
state dict): a ResNet for ``torchvision.models.resnet18/50``, a ViT for timm's
``VisionTransformer`` (``vit_base_patch16_224`` for ViT-B/16); see soco_d2/checkpoint/export.py.

With --config-file the fine-tuning detector is built from that config (plus KEY VALUE
overrides): its architecture decides --arch, every converted tensor must fit one of its
parameters, and its keys left at their initialisation are listed per group. OUT is only written
when that check passes.

IN is read without running pickled code: a file holding more than weights and the few classes
official releases keep next to them is refused, naming what it holds (docs/checkpoints.md).
--trust-pickle reads it anyway, running whatever it names: only for files you trust.
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
    detect_layout,
    format_counts,
    format_detector_report,
    get_layout,
    infer_arch,
    layout_names,
    load_detector_cfg,
    load_state_dict,
    parse_groups,
    save_detectron2_weights,
)
from soco_d2.checkpoint.export import EXPORTS, export_state_dict, format_export, save_export


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="pretraining checkpoint (.pth/.pth.tar/.pkl)")
    parser.add_argument("output", help="detectron2 weights to write (.pkl)")
    parser.add_argument(
        "--arch",
        default="auto",
        choices=["auto", "fpn", "c4", "vitdet", "resnet"],
        help="detector the keys are named for (auto: from --config-file, else fpn if the input "
        "has FPN keys, else resnet: backbone names that C4 and FPN detectors both load)",
    )
    parser.add_argument("--layout", default=None, choices=layout_names(), help="skip detection")
    parser.add_argument(
        "--to",
        default="detectron2",
        choices=["detectron2", *EXPORTS],
        help="detectron2: detector weights (.pkl); torchvision: the ResNet as a torchvision "
        "resnet state dict; timm: the ViT as a timm VisionTransformer state dict (.pth)",
    )
    parser.add_argument(
        "--groups",
        default=",".join(GROUPS),
        help="comma-separated groups to transfer (default: all); the others stay random in "
        "the detector",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read IN with unrestricted unpickling, which runs any code the file names; only for "
        "files from a source you trust (by default a file holding more than weights is refused)",
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
        if args.to != "detectron2":
            return _export(args, config_file)
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
        state = load_state_dict(args.input, trust_pickle=args.trust_pickle)
        if arch == "auto" and detector is None:
            # no detector to name the keys for: a bare ResNet gets names any ResNet detector loads
            lay = detect_layout(list(state)) if args.layout is None else get_layout(args.layout)
            arch = "resnet" if lay.infer_arch(list(state)) == "c4" else "auto"
        result = convert_state_dict(state, layout=args.layout, arch=arch, groups=groups)
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


def _export(args, config_file) -> int:
    """--to torchvision|timm: the pretrained backbone as another framework's state dict."""
    if config_file is not None:
        raise ValueError(f"--config-file checks detectron2 weights, not --to {args.to} exports")
    state = load_state_dict(args.input, trust_pickle=args.trust_pickle)
    result = export_state_dict(state, args.to, layout=args.layout)
    save_export(result, args.output)
    print("\n".join(format_export(result)))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
