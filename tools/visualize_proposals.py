#!/usr/bin/env python
"""Checkout shim: `python tools/visualize_proposals.py ...` runs
soco_d2/tools/visualize_proposals.py (installed: its console entry point in setup.py,
or `python -m soco_d2.tools.visualize_proposals`)."""
import sys

from soco_d2.tools.visualize_proposals import main

if __name__ == "__main__":
    sys.exit(main())
