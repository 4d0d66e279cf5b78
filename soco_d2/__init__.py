"""soco_d2: detection-aligned self-supervised pretraining as a Detectron2 plugin.

``import soco_d2`` registers everything the plugin adds: meta-architectures, heads, datasets.
"""
from .config import add_soco_config, add_ssl_config
from . import data  # noqa: F401  (registers datasets)
from . import modeling  # noqa: F401  (registers meta-architectures and heads)
from . import finetune  # noqa: F401  (registers fine-tuning heads: Res5ROIHeadsExtraNorm)

__version__ = "0.1.0"
__all__ = ["add_soco_config", "add_ssl_config"]
