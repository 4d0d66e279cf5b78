"""The precision losses are computed in: half precision is raised to float32, wider kept.

Losses upcast their inputs so that float16 / bfloat16 logits (AMP) do not overflow or tie; a
model run in float64 (the portable pinned-sequence test,
``tests/engine/test_engine_soco_pinned.py``) keeps float64 instead of being rounded down to float32.
"""
import torch

__all__ = ["at_least_float32"]

_HALF = (torch.float16, torch.bfloat16)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 if it is half precision, else unchanged (float32 and float64 stay)."""
    return x.float() if x.dtype in _HALF else x
