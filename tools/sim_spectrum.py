#!/usr/bin/env python
"""Checkout shim: `python tools/sim_spectrum.py ...` runs soco_d2/tools/sim_spectrum.py (installed:
`python -m soco_d2.tools.sim_spectrum`, or its console entry point, see setup.py)."""
import sys

from soco_d2.tools.sim_spectrum import main

if __name__ == "__main__":
    sys.exit(main())
