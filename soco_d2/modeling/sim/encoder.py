"""SIM's ViT encoder and token blocks, made of detectron2's own ViT modules.

detectron2's ``ViT`` (windowed attention, no cls token, a full token grid) cannot encode only
the visible tokens of a masked view, which SIM needs. :class:`TokenViT` is built from the same
parts (``detectron2.modeling.backbone.utils.PatchEmbed`` and
``detectron2.modeling.backbone.vit.Block``) under the same names (``patch_embed.proj``,
``pos_embed``, ``blocks.N``) plus a ``cls_token``, so its weights load into ViTDet's
``backbone.net`` by name. A detectron2 ``Block`` takes (B, H, W, C) maps; a token sequence runs
through it as a (B, 1, L, C) map (global attention, no relative positions).
"""
from functools import partial
from typing import Callable, Optional

import torch
from detectron2.modeling.backbone.utils import PatchEmbed
from detectron2.modeling.backbone.vit import Block
from torch import nn

from ..backbone.vit import LN_EPS
from .pos_embed import sincos_pos_embed_2d

__all__ = ["TokenViT", "TokenBatchNorm", "build_blocks", "token_norm_layer", "run_blocks"]


class TokenBatchNorm(nn.Module):
    """BatchNorm over the channels of (..., C) tokens, in float32 (SIM's projector/predictor
    norm: statistics over every token of every image)."""

    def __init__(self, dim: int, sync: bool = True):
        """
        Args:
            dim: channels C.
            sync: SyncBatchNorm (statistics over all processes; plain BN in one process).
        """
        super().__init__()
        self.bn = nn.SyncBatchNorm(dim) if sync else nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C) float32."""
        shape = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.bn(x.float().reshape(-1, shape[-1])).reshape(shape)


def token_norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """A ``dim -> module`` norm factory for token blocks.

    Args:
        norm: "LN" (LayerNorm, eps 1e-6), "BN" (BatchNorm) or "SyncBN".
    """
    if norm == "LN":
        return partial(nn.LayerNorm, eps=LN_EPS)
    if norm in ("BN", "SyncBN"):
        return partial(TokenBatchNorm, sync=norm == "SyncBN")
    raise ValueError(f"Unknown token norm {norm!r}; use 'LN', 'BN' or 'SyncBN'")


def build_blocks(
    depth: int, dim: int, num_heads: int, mlp_ratio: float, norm: str, drop_path: float = 0.0
) -> nn.ModuleList:
    """``depth`` detectron2 ViT blocks with global attention and the given token norm.

    Stochastic depth rises linearly from 0 to ``drop_path`` over the blocks (ViT's rule).
    """
    rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
    return nn.ModuleList(
        Block(
            dim=dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_path=rates[i],
            norm_layer=token_norm_layer(norm),
        )
        for i in range(depth)
    )


def run_blocks(blocks: nn.ModuleList, tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, C) tokens through detectron2 ``Block`` s (as a (B, 1, L, C) map) -> (B, L, C)."""
    x = tokens.unsqueeze(1)
    for blk in blocks:
        x = blk(x)
    return x.squeeze(1)


class TokenViT(nn.Module):
    """Patch embedding, fixed sin-cos positions, cls token and global-attention blocks.

    No final norm (SIM's encoder has none, nor has ViTDet's ViT).
    """

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        init: str = "xavier",
        pos_embed: str = "sincos",
        pos_scale: float = 1.0,
    ):
        """
        Args:
            img_size: view side in pixels (the position table covers (img_size/patch_size)^2).
            patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path_rate: as in
                detectron2's ``ViT`` (MODEL.VIT.*).
            init: "xavier" (MAE / SIM: xavier-uniform linears and patch projection) or
                "trunc_normal" (detectron2's ``ViT``: linears from a truncated normal of std
                0.02, the patch convolution at PyTorch's default), so the encoder starts where
                a randomly initialised ViTDet backbone starts.
            pos_embed: "sincos" (MAE / SIM: a fixed 2-D sin-cos table) or "learned" (trained,
                drawn from a truncated normal of std 0.02 as detectron2's ``ViT`` draws its
                table).
            pos_scale: factor on the sin-cos table (1: SIM's).
        """
        for key, value, allowed in (("POS_EMBED", pos_embed, ("sincos", "learned")),
                                    ("ENCODER_INIT", init, ("xavier", "trunc_normal"))):
            if value not in allowed:
                raise ValueError(f"MODEL.SIM.{key} must be one of {allowed}, got {value!r}")
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"view size {img_size} is not a multiple of patch {patch_size}")
        self.grid_size = img_size // patch_size
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size), stride=(patch_size, patch_size),
            embed_dim=embed_dim,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # A parameter, as in ViT, MAE and SIM state dicts (ViTDet starts its learnable table
        # from it); the sin-cos table is fixed (never trained).
        pos = sincos_pos_embed_2d(embed_dim, self.grid_size, cls_token=True).unsqueeze(0)
        pos = pos * pos_scale
        if pos_embed == "learned":
            pos = nn.init.trunc_normal_(torch.zeros_like(pos), std=0.02)
        self.pos_embed = nn.Parameter(pos, requires_grad=pos_embed == "learned")
        self.blocks = build_blocks(depth, embed_dim, num_heads, mlp_ratio, "LN", drop_path_rate)
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        # small normal cls token, unit LayerNorms; MAE / SIM: xavier-uniform linears (the patch
        # conv as a linear); detectron2's ViT: truncated normal linears, default patch conv
        if init == "xavier":
            w = self.patch_embed.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor, visible: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode the cls token and the visible patches.

        Args:
            images: (B, 3, S, S) normalised views, S = grid_size * patch_size.
            visible: (B, g*g) bool, True for patches to encode (the same count in every row);
                None encodes all patches.

        Returns:
            (B, 1 + V, D) tokens: cls first, then the visible patches in row-major order.
        """
        x = self.patch_embed(images)  # (B, g, g, D)
        b, gh, gw, d = x.shape
        if gh != self.grid_size or gw != self.grid_size:
            raise ValueError(
                f"views of {tuple(images.shape[-2:])} px give a {gh}x{gw} grid; the position "
                f"table is {self.grid_size}x{self.grid_size} (INPUT.SSL.VIEW_SIZES vs "
                "MODEL.VIT.PRETRAIN_IMG_SIZE)"
            )
        x = x.reshape(b, gh * gw, d) + self.pos_embed[:, 1:]
        if visible is not None:
            x = x[visible].reshape(b, -1, d)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        return run_blocks(self.blocks, torch.cat([cls, x], dim=1))
