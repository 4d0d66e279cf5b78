#!/usr/bin/env python
"""Checkout shim: `python tools/benchmark.py ...` runs soco_d2/tools/benchmark.py (installed:
`python -m soco_d2.tools.benchmark`, or its console entry point, see setup.py)."""
import sys

from soco_d2.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
