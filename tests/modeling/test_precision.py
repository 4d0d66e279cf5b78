"""at_least_float32: half precision raised to float32, float32 and float64 kept as they are."""
import pytest
import torch

from soco_d2.modeling.precision import at_least_float32


@pytest.mark.parametrize(
    "dtype, expected",
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
     (torch.float32, torch.float32), (torch.float64, torch.float64)],
)
def test_at_least_float32(dtype, expected):
    x = torch.tensor([1.5, -2.25], dtype=dtype)
    out = at_least_float32(x)
    assert out.dtype == expected
    assert torch.equal(out.double(), x.double())
    if dtype == expected:
        assert out is x  # no copy
