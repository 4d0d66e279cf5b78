"""A helper of two commands (``probe_features.py``, ``sim_spectrum.py``), not a command itself."""
import argparse
from typing import Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode

from soco_d2.engine import load_cfg

__all__ = ["weights_cli"]


def weights_cli(
    description: str,
    config_help: str,
    argv: Optional[Sequence[str]] = None,
    add_arguments=None,
) -> Tuple[argparse.Namespace, CfgNode]:
    """The command line the weight-checking tools share (``tools/probe_features.py``,
    ``tools/sim_spectrum.py``): ``--config-file``, repeatable ``--weights`` ("" = random init),
    ``--threads``, ``--trust-pickle`` and trailing ``KEY VALUE`` overrides; sets the thread
    count and loads the config.

    Args:
        description: the tool's one-line description.
        config_help: what the config file is.
        argv: arguments (default: ``sys.argv[1:]``).
        add_arguments: called with the parser to add the tool's own flags.

    Returns:
        ``(args, cfg)``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", required=True, help=config_help)
    parser.add_argument(
        "--weights",
        action="append",
        required=True,
        help="weights file; repeat to compare; '' = random init",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read .pkl weights with unrestricted unpickling, which runs any code "
        "a file names (docs/checkpoints.md); only for files you trust",
    )
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, load_cfg(args.config_file, args.opts)
