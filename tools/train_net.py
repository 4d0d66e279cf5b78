#!/usr/bin/env python
"""Checkout shim: `python tools/train_net.py ...` runs soco_d2/tools/train_net.py (installed:
`soco-d2-train` or `python -m soco_d2.tools.train_net`; torchrun takes either the module with
`-m` or this file)."""
import sys

from soco_d2.tools.train_net import cli, main  # noqa: F401  (main: one process, for wrappers)

if __name__ == "__main__":
    cli(sys.argv[1:])
