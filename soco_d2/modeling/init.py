"""Initialisations shared by the ResNet methods."""
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from torch import nn

__all__ = ["zero_init_residual_"]


def zero_init_residual_(module: nn.Module) -> None:
    """Zero the weight of the last norm in each ResNet block (official SoCo ResNet init)."""
    for m in module.modules():
        last = None
        if isinstance(m, BottleneckBlock):
            last = m.conv3.norm
        elif isinstance(m, BasicBlock):
            last = m.conv2.norm
        # Only trainable norms: zeroing a FrozenBN's weight would silence the block for good.
        if isinstance(getattr(last, "weight", None), nn.Parameter):
            nn.init.zeros_(last.weight)
