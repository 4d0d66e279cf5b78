"""The base classes of every pretraining meta-architecture.

What the engine, the benchmark and the converter rely on (and nothing else):

- ``forward(batched_inputs)``: ``batched_inputs`` is a list of the outputs of the method's
  dataset mapper (``soco_d2.data.dataset_mappers``; ``INPUT.DATASET_MAPPER_NAME``). In training
  it returns a dict of scalar ``loss_*`` tensors (summed by the trainer); extra scalars go to
  ``get_event_storage().put_scalar``.
- ``is_pretraining = True``: the trainer reads views through the mapper and skips evaluation.
- ``update_target(m)``, only for a method with a target network: one EMA step of the target
  after each optimizer step (called by ``soco_d2.engine.hooks.TargetEMAHook`` with
  ``m = target_momentum(iter, max_iter)``). The engine adds that hook only to models that define
  ``update_target``, so a method without a target (SimCLR- or MAE-style) needs no stub.
- ``floor(batched_inputs)``: a scalar touching the outputs of the backbone passes no
  implementation of the method can avoid (online forward, whose backward the benchmark times,
  and the target forward under no_grad, if there is a target); ``tools/benchmark.py`` measures
  a step against it.
- Online modules are named as in detectron2's detectors (``backbone``, ``roi_heads.box_head``),
  so the converter transfers them by prefix; a target lives under ``target.``.

:class:`SSLMetaArch` owns input normalisation (``pixel_mean`` / ``pixel_std`` buffers, padding to
the backbone's size divisibility) and channels_last (applied once to the whole module at the end
of construction). :class:`EMATargetMetaArch` adds the EMA target: the online/target split
(:meth:`~EMATargetMetaArch.online_parts`, a deep copy under ``target``, parameters EMA'd,
buffers left to the target's own forward passes) and the momentum schedule (constant, as MoCo,
or cosine from m0 to 1, as BYOL / SoCo / SIM). All six methods of this plugin subclass
:class:`EMATargetMetaArch`.
"""
from typing import Dict, List, Sequence

import torch
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn

from ..momentum import build_momentum_target, constant_momentum, cosine_momentum, ema_update_

__all__ = ["SSLMetaArch", "EMATargetMetaArch", "MOMENTUM_SCHEDULES"]

MOMENTUM_SCHEDULES = {"cosine": cosine_momentum, "constant": constant_momentum}


class SSLMetaArch(nn.Module):
    """Normalisation and channels_last, for every pretraining method to reuse.

    A subclass builds its modules in ``__init__`` after calling ``super().__init__``, implements
    ``forward`` and :meth:`floor`, and calls :meth:`finish_init` last.
    """

    # Read by the engine: models of this family train on unlabeled views, without evaluation.
    is_pretraining = True

    def __init__(
        self,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        channels_last: bool = False,
    ):
        """
        Args:
            pixel_mean, pixel_std: per-channel normalisation, in the views' channel order.
            channels_last: keep images and weights in channels_last memory format.
        """
        super().__init__()
        self.channels_last = bool(channels_last)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @staticmethod
    def base_config(cfg) -> Dict:
        """The keyword arguments of ``SSLMetaArch.__init__`` from a config."""
        return {
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "channels_last": cfg.MODEL.SSL.CHANNELS_LAST,
        }

    def finish_init(self) -> None:
        """Apply channels_last to every module built so far."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ---------------------------------------------------------------- inputs
    def normalize(self, images: List[torch.Tensor], size_divisibility: int = 0) -> ImageList:
        """uint8 (3, H, W) images -> normalised float ImageList, padded right/bottom.

        Args:
            images: N tensors in the mapper's channel order (cfg.INPUT.FORMAT).
            size_divisibility: pad H and W up to a multiple of it (the backbone's).

        Returns:
            ImageList of (N, 3, H', W'), channels_last when the model is.
        """
        images = [x.to(self.device, non_blocking=True) for x in images]
        images = [(x.float() - self.pixel_mean) / self.pixel_std for x in images]
        out = ImageList.from_tensors(images, size_divisibility)
        if self.channels_last:
            out.tensor = out.tensor.contiguous(memory_format=torch.channels_last)
        return out

    def floor(self, batched_inputs: List[dict]) -> torch.Tensor:
        """A scalar over the unavoidable backbone passes of one step (see module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} does not define its benchmark floor")


class EMATargetMetaArch(SSLMetaArch):
    """:class:`SSLMetaArch` with an EMA target network and its momentum schedule.

    A subclass also implements :meth:`online_parts`; :meth:`finish_init` builds the target from
    them before applying channels_last, so the target is converted too.
    """

    def __init__(self, *, momentum: float = 0.99, momentum_schedule: str = "cosine", **kwargs):
        """
        Args:
            momentum: m0 of the EMA target (MODEL.SSL.MOMENTUM).
            momentum_schedule: "cosine" or "constant" (MODEL.SSL.MOMENTUM_SCHEDULE).
            kwargs: see :class:`SSLMetaArch` (normalisation, channels_last).
        """
        super().__init__(**kwargs)
        if momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ValueError(
                f"MODEL.SSL.MOMENTUM_SCHEDULE must be one of {sorted(MOMENTUM_SCHEDULES)}, got "
                f"{momentum_schedule!r}"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MODEL.SSL.MOMENTUM must be in [0, 1], got {momentum}")
        self.base_momentum = float(momentum)
        self.momentum_schedule = momentum_schedule

    @staticmethod
    def base_config(cfg) -> Dict:
        """The keyword arguments of ``EMATargetMetaArch.__init__`` from a config."""
        return {
            **SSLMetaArch.base_config(cfg),
            "momentum": cfg.MODEL.SSL.MOMENTUM,
            "momentum_schedule": cfg.MODEL.SSL.MOMENTUM_SCHEDULE,
        }

    def finish_init(self) -> None:
        """Build the target from :meth:`online_parts`, then apply channels_last everywhere."""
        self.target = build_momentum_target(self._online_container())
        super().finish_init()

    def online_parts(self) -> Dict[str, nn.Module]:
        """The online modules the target mirrors, by name (same order on every call)."""
        raise NotImplementedError

    def _online_container(self) -> nn.ModuleDict:
        # A fresh, unregistered container: the online modules stay registered where they are.
        return nn.ModuleDict(self.online_parts())

    def target_momentum(self, iteration: int, max_iter: int) -> float:
        """The EMA momentum after ``iteration`` of ``max_iter`` under this model's schedule."""
        return MOMENTUM_SCHEDULES[self.momentum_schedule](self.base_momentum, iteration, max_iter)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """One EMA step: target = m * target + (1 - m) * online, on parameters only."""
        ema_update_(self.target, self._online_container(), momentum)
        try:  # a python float: logging it costs no device sync
            get_event_storage().put_scalar("ssl/target_momentum", momentum, smoothing_hint=False)
        except AssertionError:  # no EventStorage outside a trainer (tests, scripts)
            pass
