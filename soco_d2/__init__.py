"""soco_d2: detection-aligned self-supervised pretraining as a Detectron2 plugin.

``import soco_d2`` registers everything the plugin adds: meta-architectures, heads, datasets.
"""
import warnings

with warnings.catch_warnings():
    # fvcore's focal losses and detectron2's box coder are compiled with torch.jit.script when
    # they are imported, which this torch deprecates: not the user's code, so not shown on
    # every command. Only that warning, only during these imports.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
    import detectron2.modeling  # noqa: F401
    import fvcore.nn  # noqa: F401

from .config import add_ssl_config  # noqa: E402
from . import data  # noqa: F401,E402  (registers datasets)
from . import modeling  # noqa: F401,E402  (registers meta-architectures and heads)
from . import finetune  # noqa: F401,E402  (registers fine-tuning heads: Res5ROIHeadsExtraNorm)

__version__ = "0.1.0"
__all__ = ["add_ssl_config"]
