"""Turning pretraining checkpoints into detector weights (see :mod:`.convert`)."""
from .convert import (  # noqa: F401
    GROUPS,
    LAYOUTS,
    ConversionResult,
    UnknownLayoutError,
    check_groups,
    convert_checkpoint,
    convert_state_dict,
    detect_layout,
    load_state_dict,
    parse_groups,
    save_detectron2_weights,
)
