"""MLP projector and predictor heads (BYOL / SoCo style)."""
from torch import nn

__all__ = ["MLPHead", "get_norm_1d"]


def get_norm_1d(norm: str, dim: int) -> nn.Module:
    """A norm layer for (M, C) inputs.

    Args:
        norm: "SyncBN" (torch SyncBatchNorm; falls back to plain BN outside distributed
            training), "BN" (BatchNorm1d) or "" (no norm).
        dim: number of channels C.
    """
    if norm == "SyncBN":
        return nn.SyncBatchNorm(dim)
    if norm == "BN":
        return nn.BatchNorm1d(dim)
    if norm in ("", "none", None):
        return nn.Identity()
    raise ValueError(f"Unknown MLP norm {norm!r}; use 'SyncBN', 'BN' or ''")


class MLPHead(nn.Module):
    """Linear -> norm -> ReLU -> Linear, on (M, in_dim) vectors.

    Submodules are named ``linear1``, ``bn1``, ``linear2`` as in the official SoCo MLP, so its
    projector/predictor weights map one to one.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, norm: str = "SyncBN"):
        """
        Args:
            in_dim: input width (1024 from the 4conv1fc box head, 2048 from res5, 256 for
                the predictor).
            hidden_dim: hidden width (4096 in SoCo).
            out_dim: output width (256 in SoCo).
            norm: see :func:`get_norm_1d`.
        """
        super().__init__()
        self.linear1 = nn.Linear(in_dim, hidden_dim, bias=True)
        self.bn1 = get_norm_1d(norm, hidden_dim)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(hidden_dim, out_dim, bias=True)
        self.out_dim = out_dim

    def forward(self, x):
        """(M, in_dim) -> (M, out_dim)."""
        return self.linear2(self.relu(self.bn1(self.linear1(x))))
