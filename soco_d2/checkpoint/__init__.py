"""Turning pretraining checkpoints into detector weights.

- ``layouts/``: the table of checkpoint formats, one module per family;
- :mod:`.load`: reading a checkpoint file without running pickled code (``trust_pickle``
  to read one that needs it);
- :mod:`.convert`: the generic converter and its per-group report;
- :mod:`.detector`: checking converted weights against the detector a config builds.
"""
from .convert import (  # noqa: F401
    GROUPS,
    ConversionResult,
    UnknownLayoutError,
    check_groups,
    convert_checkpoint,
    convert_state_dict,
    detect_layout,
    format_counts,
    parse_groups,
    save_detectron2_weights,
)
from .detector import (  # noqa: F401
    DetectorMismatchError,
    build_detector_state,
    check_against_detector,
    detector_group,
    format_detector_report,
    infer_arch,
    load_detector_cfg,
)
from .layouts import ARCHS, Layout, get_layout, layout_names, register_layout  # noqa: F401
from .checkpointer import RestrictedCheckpointer  # noqa: F401
from .load import UntrustedCheckpointError, load_state_dict, read_checkpoint  # noqa: F401


def __getattr__(name: str):
    # LAYOUTS is a view of the layout table, so layouts registered later appear in it too.
    if name == "LAYOUTS":
        from .layouts import registered_layouts

        return registered_layouts()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
