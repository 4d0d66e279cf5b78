#!/usr/bin/env python
"""Convert proposals between formats, chosen by extension:

    cache (any other extension) <-> official SoCo JSON (.json)
    cache or .json               ->  detectron2 proposal pickle (.pkl, DATASETS.PROPOSAL_FILES_*)

    tools/convert_proposals.py IN OUT
"""
import argparse
import json
import sys

from soco_d2.data.proposals import convert_proposals


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("src", metavar="IN")
    p.add_argument("dst", metavar="OUT")
    args = p.parse_args(argv)
    n = convert_proposals(args.src, args.dst)
    print(json.dumps({"images": n, "input": args.src, "output": args.dst}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
