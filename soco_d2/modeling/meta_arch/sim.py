"""SIM: Siamese Image Modeling (dense prediction of one view's features from another view).

Two crops of an image. The online ViT encodes the visible patches of view 1 (block-masked) and
its cls token; a linear ``decoder_embed`` and ``projector`` blocks follow. The ``predictor``
blocks then read those tokens (plus fixed sin-cos positions of view 1) together with one mask
token per cell of view 2, each carrying view 2's position *relative to view 1*
(``decoder_pos_mlp`` of the relative sin-cos embedding, ``soco_d2/modeling/sim/pos_embed.py``),
and ``decoder_pred`` outputs a prediction per view-2 cell. The target is an EMA copy of the
encoder, ``decoder_embed`` and projector run on the whole, unmasked view 2; its patch tokens,
layer-normalised, are regressed with the UniGrad loss (``soco_d2/modeling/sim/unigrad.py``).

Names: the encoder lives at ``backbone.net`` (``patch_embed.proj``, ``pos_embed``,
``blocks.N``) as detectron2's ViTDet names its ViT, so converted weights load by name; the EMA
copy is ``target.*``; everything else (decoder, projector, predictor) is dropped at transfer.

Details the paper leaves open follow the official implementation
(OpenGVLab/Siamese-Image-Modeling):
- projector/predictor blocks normalise with BatchNorm over channels (all tokens of all
  images) unless MODEL.SIM.*_NORM is "LN"; the target's BatchNorms use batch statistics;
- the patch embedding is frozen (MODEL.SIM.TRAIN_PATCH_EMBED) and the position tables are
  fixed sin-cos; the EMA moves parameters only;
- momentum: the base class's cosine schedule per iteration,
  ``1 - (1 - m0) (cos(pi k / K) + 1) / 2``, is SIM's ``1 - 0.5 (1 + cos(pi t / epochs))
  (1 - m0)`` with t in fractional epochs (t / epochs = k / K); the official code applies
  step k's momentum before step k, the engine after step k - 1: the index shifts by one.
"""
from typing import Dict, List

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn

from ...config import register_method_config
from ..sim import TokenViT, build_blocks, relative_pos_embed, run_blocks, sincos_pos_embed_2d
from ..sim import correlation_spectrum, unigrad_loss
from .base import EMATargetMetaArch

__all__ = ["SIM", "add_sim_method_config"]


@register_method_config
def add_sim_method_config(cfg: CN) -> None:
    """SIM's own keys: ``MODEL.SIM`` (decoder, loss) and ``INPUT.SIM`` (masking).

    The encoder is ``MODEL.VIT`` (PATCH_SIZE, EMBED_DIM, DEPTH, NUM_HEADS, MLP_RATIO,
    DROP_PATH_RATE; its views are ``MODEL.VIT.PRETRAIN_IMG_SIZE`` px); EMA keys are MODEL.SSL.
    """
    if hasattr(cfg.MODEL, "SIM"):
        return
    _C = cfg
    _C.MODEL.SIM = CN()
    # Token width of decoder_embed, projector and predictor (SIM ViT-B: 768).
    _C.MODEL.SIM.DECODER_EMBED_DIM = 768
    # Attention heads of the projector/predictor blocks.
    _C.MODEL.SIM.DECODER_NUM_HEADS = 16
    # Projector blocks (online, and EMA-copied into the target).
    _C.MODEL.SIM.PROJECTOR_DEPTH = 2
    # Predictor blocks (online only).
    _C.MODEL.SIM.PREDICTOR_DEPTH = 4
    # Norm of the projector blocks: "SyncBN", "BN" (over channels, all tokens) or "LN".
    _C.MODEL.SIM.PROJECTOR_NORM = "SyncBN"
    # Norm of the predictor blocks: "SyncBN", "BN" or "LN".
    _C.MODEL.SIM.PREDICTOR_NORM = "SyncBN"
    # Weight of UniGrad's negative (correlation) term.
    _C.MODEL.SIM.NEG_WEIGHT = 0.02
    # Train the patch embedding (SIM freezes it: False).
    _C.MODEL.SIM.TRAIN_PATCH_EMBED = False
    # Encoder initialisation: "xavier" (SIM's) or "trunc_normal" (detectron2 ViT's own, the
    # start of a scratch ViTDet backbone; soco_d2/modeling/sim/encoder.py).
    _C.MODEL.SIM.ENCODER_INIT = "xavier"
    # Encoder position table: "sincos" (SIM's, fixed) or "learned" (trained from detectron2
    # ViT's own start, a truncated normal of std 0.02).
    _C.MODEL.SIM.POS_EMBED = "sincos"
    # Factor on the sin-cos table (1.0: SIM's); a converted encoder hands ViTDet the scaled table.
    _C.MODEL.SIM.POS_EMBED_SCALE = 1.0

    _C.INPUT.SIM = CN()
    # Patches of view 1 masked per image, exactly (SIM ViT-B/16 at 224 px: 118 of 196).
    _C.INPUT.SIM.NUM_MASKING_PATCHES = 118
    # Smallest block area in patches (BEiT's 16).
    _C.INPUT.SIM.MIN_BLOCK_PATCHES = 16
    # Largest block area in patches; 0 = NUM_MASKING_PATCHES.
    _C.INPUT.SIM.MAX_BLOCK_PATCHES = 0
    # Smallest block aspect ratio (rows / columns); the largest is its inverse.
    _C.INPUT.SIM.MIN_ASPECT = 0.3


@META_ARCH_REGISTRY.register()
class SIM(EMATargetMetaArch):
    """Siamese Image Modeling on a ViT encoder.

    Input: a list of dicts, one per image, from the "sim" mapper
    (``soco_d2/data/dataset_mappers/sim.py``): ``"views"`` 2 uint8 (3, S, S);
    ``"view_regions"`` (2, 4) XYXY crop regions in original pixels; ``"view_flipped"`` (2,) bool;
    ``"image_size"`` (H, W); ``"mask"`` (g*g,) bool, True for masked patches of view 1.

    Training output: ``{"loss_sim": scalar}`` (UniGrad; its terms are logged as ``sim/pos``,
    ``sim/neg``).

    Eval output: a list of dicts ``{"cls": (D,), "patch_tokens": (g*g, D)}``, the online
    encoder on the whole view 1.
    """

    @configurable
    def __init__(
        self,
        *,
        encoder: TokenViT,
        decoder_dim: int,
        decoder_heads: int,
        mlp_ratio: float,
        projector_depth: int,
        predictor_depth: int,
        projector_norm: str,
        predictor_norm: str,
        neg_weight: float = 0.02,
        train_patch_embed: bool = False,
        **kwargs,
    ):
        """
        Args:
            encoder: the online ViT (placed at ``backbone.net``).
            decoder_dim, decoder_heads: width and heads of the projector/predictor blocks.
            mlp_ratio: MLP ratio of those blocks.
            projector_depth, predictor_depth: number of blocks.
            projector_norm, predictor_norm: "SyncBN", "BN" or "LN".
            neg_weight: UniGrad negative-term weight.
            train_patch_embed: leave the patch embedding trainable.
            kwargs: see :class:`EMATargetMetaArch` (normalisation, momentum, channels_last).
        """
        super().__init__(**kwargs)
        if decoder_dim % 4:
            raise ValueError(f"MODEL.SIM.DECODER_EMBED_DIM must be divisible by 4: {decoder_dim}")
        embed_dim = encoder.cls_token.shape[-1]
        g = encoder.grid_size
        # ModuleDict so parameters are named backbone.net.*, as in ViTDet's detector.
        self.backbone = nn.ModuleDict({"net": encoder})
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.projector = build_blocks(
            projector_depth, decoder_dim, decoder_heads, mlp_ratio, projector_norm
        )
        self.predictor = build_blocks(
            predictor_depth, decoder_dim, decoder_heads, mlp_ratio, predictor_norm
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_mlp = nn.Linear(2 * decoder_dim, decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, decoder_dim)
        self.register_buffer(
            "decoder_pos_embed",
            sincos_pos_embed_2d(decoder_dim, g, cls_token=True).unsqueeze(0),
            persistent=False,
        )
        self.neg_weight = float(neg_weight)
        self.decoder_dim = decoder_dim
        for m in [self.decoder_embed, self.projector, self.predictor, self.decoder_pos_mlp,
                  self.decoder_pred]:
            for sub in m.modules():
                if isinstance(sub, nn.Linear):
                    nn.init.xavier_uniform_(sub.weight)
                    nn.init.zeros_(sub.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        if not train_patch_embed:
            encoder.patch_embed.requires_grad_(False)
        self.finish_init()

    @classmethod
    def from_config(cls, cfg):
        v, s = cfg.MODEL.VIT, cfg.MODEL.SIM
        sizes = list(cfg.INPUT.SSL.VIEW_SIZES)
        if len(sizes) != 2 or sizes[0] != sizes[1] or sizes[0] != v.PRETRAIN_IMG_SIZE:
            raise ValueError(
                f"SIM needs INPUT.SSL.VIEW_SIZES of two equal sides = MODEL.VIT.PRETRAIN_IMG_SIZE "
                f"({v.PRETRAIN_IMG_SIZE}), got {sizes}"
            )
        if v.EMBED_DIM % v.NUM_HEADS or s.DECODER_EMBED_DIM % s.DECODER_NUM_HEADS:
            raise ValueError(
                "MODEL.VIT.EMBED_DIM / NUM_HEADS and MODEL.SIM.DECODER_EMBED_DIM / "
                "DECODER_NUM_HEADS must divide evenly"
            )
        encoder = TokenViT(
            img_size=v.PRETRAIN_IMG_SIZE,
            patch_size=v.PATCH_SIZE,
            embed_dim=v.EMBED_DIM,
            depth=v.DEPTH,
            num_heads=v.NUM_HEADS,
            mlp_ratio=v.MLP_RATIO,
            drop_path_rate=v.DROP_PATH_RATE,
            init=s.ENCODER_INIT,
            pos_embed=s.POS_EMBED,
            pos_scale=s.POS_EMBED_SCALE,
        )
        return {
            **EMATargetMetaArch.base_config(cfg),
            "encoder": encoder,
            "decoder_dim": s.DECODER_EMBED_DIM,
            "decoder_heads": s.DECODER_NUM_HEADS,
            "mlp_ratio": v.MLP_RATIO,
            "projector_depth": s.PROJECTOR_DEPTH,
            "predictor_depth": s.PREDICTOR_DEPTH,
            "projector_norm": s.PROJECTOR_NORM,
            "predictor_norm": s.PREDICTOR_NORM,
            "neg_weight": s.NEG_WEIGHT,
            "train_patch_embed": s.TRAIN_PATCH_EMBED,
        }

    def online_parts(self) -> Dict[str, nn.Module]:
        return {
            "backbone": self.backbone,
            "decoder_embed": self.decoder_embed,
            "projector": self.projector,
        }

    @property
    def grid_size(self) -> int:
        return self.backbone["net"].grid_size

    # ----------------------------------------------------------------- inputs
    def _check_inputs(self, batched_inputs: List[dict]) -> None:
        if not batched_inputs:
            raise ValueError("SIM got an empty batch")
        need = ("views", "view_regions", "view_flipped", "image_size", "mask")
        n = self.grid_size**2
        counts = set()
        for x in batched_inputs:
            missing = [k for k in need if k not in x]
            if missing:
                raise KeyError(
                    f"SIM inputs need {need} (INPUT.DATASET_MAPPER_NAME 'sim'); missing {missing}"
                )
            if len(x["views"]) != 2:
                raise ValueError(f"SIM takes 2 views per image, got {len(x['views'])}")
            if x["mask"].numel() != n:
                raise ValueError(f"mask has {x['mask'].numel()} patches, the grid has {n}")
            counts.add(int(x["mask"].sum()))
        if len(counts) != 1:
            raise ValueError(f"every mask of a batch must hide the same count, got {counts}")

    def _geometry(self, batched_inputs: List[dict]):
        regions = torch.stack([torch.as_tensor(x["view_regions"]) for x in batched_inputs])
        flipped = torch.stack([torch.as_tensor(x["view_flipped"]) for x in batched_inputs])
        width = torch.tensor([float(x["image_size"][1]) for x in batched_inputs])
        return regions.float(), flipped.bool(), width

    # ---------------------------------------------------------------- network
    def _target_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Target patch tokens of whole views: (B, g*g, decoder_dim), no gradient."""
        with torch.no_grad():
            t = self.target["backbone"]["net"](images)
            t = run_blocks(self.target["projector"], self.target["decoder_embed"](t))
        return t[:, 1:]

    def _online_tokens(self, images: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Projected online tokens of the visible patches: (B, 1 + V, decoder_dim)."""
        z = self.decoder_embed(self.backbone["net"](images, visible))
        return run_blocks(self.projector, z)

    def forward(self, batched_inputs: List[dict]):
        self._check_inputs(batched_inputs)
        if not self.training:
            return self.inference(batched_inputs)
        img1 = self.normalize([x["views"][0] for x in batched_inputs]).tensor
        img2 = self.normalize([x["views"][1] for x in batched_inputs]).tensor
        masked = torch.stack([x["mask"].reshape(-1).bool() for x in batched_inputs]).to(self.device)
        visible = ~masked
        b, n = masked.shape

        z = self._online_tokens(img1, visible)
        pos = self.decoder_pos_embed.to(z.dtype)
        cls = z[:, :1] + pos[:, :1]
        vis = z[:, 1:] + pos[:, 1:].expand(b, -1, -1)[visible].reshape(b, -1, self.decoder_dim)
        regions, flipped, width = self._geometry(batched_inputs)
        rel = relative_pos_embed(regions, flipped, width, self.grid_size, self.decoder_dim)
        queries = self.mask_token + self.decoder_pos_mlp(rel.to(self.device))
        x = run_blocks(self.predictor, torch.cat([cls, vis, queries.to(z.dtype)], dim=1))
        pred = self.decoder_pred(x)[:, -n:]

        target = self._target_tokens(img2)
        out = unigrad_loss(pred, target, self.neg_weight)
        try:
            storage = get_event_storage()
            storage.put_scalar("sim/pos", out["pos"])
            storage.put_scalar("sim/neg", out["neg"])
        except AssertionError:  # no EventStorage outside a trainer
            pass
        return {"loss_sim": out["loss"]}

    @torch.no_grad()
    def token_spectra(self, images: List[torch.Tensor]) -> Dict[str, Dict[str, float]]:
        """:func:`~soco_d2.modeling.sim.unigrad.correlation_spectrum` of whole, unmasked views.

        Args:
            images: (3, S, S) views at the pretraining's view size, in INPUT.FORMAT, 0-255.

        Returns:
            ``{"encoder": ..., "target": ...}``: the online encoder's patch tokens (what a
            detector's ViT inherits) and the target's projected tokens (what the loss predicts).
        """
        x = self.normalize(images).tensor
        encoder = self.backbone["net"](x)[:, 1:]
        return {"encoder": correlation_spectrum(encoder),
                "target": correlation_spectrum(self._target_tokens(x))}

    def floor(self, batched_inputs: List[dict]) -> torch.Tensor:
        """Online encoder on the visible tokens, projector and predictor blocks (the mask
        tokens without positions), and the target encoder + projector on the whole view 2."""
        img1 = self.normalize([x["views"][0] for x in batched_inputs]).tensor
        img2 = self.normalize([x["views"][1] for x in batched_inputs]).tensor
        masked = torch.stack([x["mask"].reshape(-1).bool() for x in batched_inputs]).to(self.device)
        z = self._online_tokens(img1, ~masked)
        queries = self.mask_token.expand(z.shape[0], masked.shape[1], -1).to(z.dtype)
        x = run_blocks(self.predictor, torch.cat([z, queries], dim=1))
        target = self._target_tokens(img2)
        return x.float().mean() + target.float().mean()

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, torch.Tensor]]:
        """Online encoder tokens of the whole view 1 of every image."""
        img1 = self.normalize([x["views"][0] for x in batched_inputs]).tensor
        z = self.backbone["net"](img1)
        return [{"cls": t[0], "patch_tokens": t[1:]} for t in z]
