"""Optimizers (LARS) and schedule helpers for soco_d2."""
from .build import build_optimizer, split_excluded_params
from .lars import LARS
from .schedule import iterations_per_epoch, resolve_schedule

__all__ = [
    "LARS",
    "build_optimizer",
    "split_excluded_params",
    "iterations_per_epoch",
    "resolve_schedule",
]
