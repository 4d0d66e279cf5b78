"""The parts of Siamese Image Modeling (SIM): sin-cos absolute and relative position
embeddings, the UniGrad loss and a token encoder made of detectron2's ViT modules. The
meta-architecture is ``soco_d2/modeling/meta_arch/sim.py``; the block masking of view 1 is a
data transform (``soco_d2/data/masking.py``, used by the ``sim`` mapper)."""
from .encoder import TokenBatchNorm, TokenViT, build_blocks, run_blocks, token_norm_layer
from .pos_embed import (
    relative_coordinates,
    relative_pos_embed,
    sincos_frequencies,
    sincos_pos_embed_2d,
)
from .unigrad import correlation_spectrum, target_correlation, unigrad_loss

__all__ = [
    "TokenBatchNorm",
    "TokenViT",
    "build_blocks",
    "correlation_spectrum",
    "relative_coordinates",
    "relative_pos_embed",
    "run_blocks",
    "sincos_frequencies",
    "sincos_pos_embed_2d",
    "target_correlation",
    "token_norm_layer",
    "unigrad_loss",
]
