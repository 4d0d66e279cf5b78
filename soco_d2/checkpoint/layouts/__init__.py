"""The table of checkpoint layouts: one module per family, each registering its
:class:`~.base.Layout` with :func:`~.base.register_layout`.

Every module of this package is imported here (in name order), so a new format is a new file
and nothing else changes. Detection does not depend on that order: a checkpoint accepted by two
layouts is refused as ambiguous.
"""
import importlib
import pkgutil

from .base import (  # noqa: F401
    ARCHS,
    GROUPS,
    Layout,
    UnknownLayoutError,
    detectron2_to_torchvision,
    get_layout,
    has_torchvision_resnet,
    is_torchvision_resnet_param,
    layout_names,
    place_resnet_key,
    register_layout,
    registered_layouts,
    torchvision_to_detectron2,
)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
