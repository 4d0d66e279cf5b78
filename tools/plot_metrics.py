#!/usr/bin/env python
"""Checkout shim: `python tools/plot_metrics.py ...` runs soco_d2/tools/plot_metrics.py (installed:
`python -m soco_d2.tools.plot_metrics`, or its console entry point, see setup.py)."""
import sys

from soco_d2.tools.plot_metrics import main

if __name__ == "__main__":
    sys.exit(main())
