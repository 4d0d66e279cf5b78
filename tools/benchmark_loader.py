#!/usr/bin/env python
"""Checkout shim: `python tools/benchmark_loader.py ...` runs soco_d2/tools/benchmark_loader.py
(installed: `python -m soco_d2.tools.benchmark_loader`, or its console entry point)."""
import sys

from soco_d2.tools.benchmark_loader import main

if __name__ == "__main__":
    sys.exit(main())
