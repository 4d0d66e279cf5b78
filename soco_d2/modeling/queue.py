"""A ring buffer of past keys, the negatives of MoCo-style InfoNCE losses.

MoCo, DenseCL and DetCo keep the last ``size`` key embeddings of the momentum encoder. The ring
and its write pointer are buffers, so they travel in checkpoints and a resumed run continues the
ring exactly where it stopped.

On a small unlabeled pool the ring spans more than an epoch, so it holds keys of the query's
own image from earlier steps: negatives that are really positives. With ``track_ids`` the ring
also records which image each key came from (:func:`image_ids`), and the losses can leave those
keys out (``MODEL.MOCO.EXCLUDE_SAME_IMAGE``).
"""
import hashlib
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .comm import concat_all_gather

__all__ = ["KeyQueue", "image_ids", "gather_ids"]

# Id of a ring slot that holds no key of a known image (the random initial keys).
NO_IMAGE = -1


def image_ids(images: Iterable[dict], device=None) -> torch.Tensor:
    """(B,) int64 ids of the inputs' images, equal for the same ``"file_name"`` (else
    ``"image_id"``: two concatenated datasets may reuse ids, never file names) in every process
    and every run: 63 bits of its BLAKE2b digest."""
    ids = []
    for x in images:
        key = x.get("file_name", x.get("image_id"))
        if key is None:
            raise ValueError(
                "excluding same-image keys needs a 'file_name' or 'image_id' per input"
            )
        digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
        ids.append(int.from_bytes(digest, "little") >> 1)
    return torch.tensor(ids, dtype=torch.long, device=device)


def gather_ids(ids: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Every process's ``ids``, in the order ``concat_all_gather`` gives their keys; None
    stays None."""
    return None if ids is None else concat_all_gather(ids)


class KeyQueue(nn.Module):
    """``size`` L2-normalised ``dim``-d keys, written in order at a wrapping pointer.

    Buffers:
        queue: (dim, size) float keys, one per column (the official MoCo layout, so the
            negatives' logits are ``q @ queue``); starts as random unit vectors.
        queue_ptr: (1,) long, the column the next key batch is written at.
        ids: (size,) long, only with ``track_ids``: the image id of each column's key
            (:func:`image_ids`; ``NO_IMAGE`` for the initial random keys).
    """

    def __init__(self, dim: int, size: int, track_ids: bool = False):
        """
        Args:
            dim: key width D (MoCo: 128).
            size: number of keys K (MoCo: 65536); every enqueued batch must divide it.
            track_ids: also record each key's image id (then :meth:`enqueue` needs them).
        """
        super().__init__()
        if dim <= 0 or size <= 0:
            raise ValueError(f"KeyQueue needs dim > 0 and size > 0, got dim={dim}, size={size}")
        self.dim = int(dim)
        self.size = int(size)
        self.track_ids = bool(track_ids)
        self.register_buffer("queue", F.normalize(torch.randn(self.dim, self.size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        if self.track_ids:
            self.register_buffer("ids", torch.full((self.size,), NO_IMAGE, dtype=torch.long))

    def check_batch(self, total_batch: int, size_key: str = "the queue size") -> None:
        """Fail early when a step's keys (all processes together) cannot tile the ring.

        Args:
            total_batch: keys enqueued per step over all processes (SOLVER.IMS_PER_BATCH).
            size_key: the config key that set ``size``, named in the error.
        """
        if total_batch <= 0 or self.size % total_batch != 0:
            raise ValueError(
                f"{size_key} ({self.size}) must be a multiple of SOLVER.IMS_PER_BATCH "
                f"({total_batch}): each step writes IMS_PER_BATCH keys into the ring, so the ring "
                f"must hold a whole number of steps. Change SOLVER.IMS_PER_BATCH or {size_key}."
            )

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: Optional[torch.Tensor] = None) -> None:
        """Write ``keys`` at the pointer, overwriting the oldest; advance the pointer.

        Args:
            keys: (B, dim), already gathered from every process and L2-normalised.
            ids: (B,) long image ids of the keys, gathered the same way; required with
                ``track_ids``, ignored without.
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(
                f"KeyQueue.enqueue expects (B, {self.dim}) keys, got {tuple(keys.shape)}"
            )
        b = keys.shape[0]
        if b == 0 or self.size % b != 0:
            raise ValueError(
                f"KeyQueue of size {self.size} cannot take batches of {b} keys: the size must be "
                f"a multiple of the number of keys per step (SOLVER.IMS_PER_BATCH)"
            )
        if self.track_ids and (ids is None or tuple(ids.shape) != (b,)):
            raise ValueError(
                f"this KeyQueue records image ids: enqueue needs ({b},) ids with its keys"
            )
        ptr = int(self.queue_ptr[0])
        # The official layout: keys as columns; b divides size, so a batch never straddles the end.
        self.queue[:, ptr : ptr + b] = keys.detach().t().to(self.queue.dtype)
        if self.track_ids:
            self.ids[ptr : ptr + b] = ids.to(self.ids.device)
        self.queue_ptr[0] = (ptr + b) % self.size

    def batch_ids(self, batched_inputs) -> Optional[torch.Tensor]:
        """(N,) image ids of a batch's inputs (:func:`image_ids`), or None without
        ``track_ids``."""
        return image_ids(batched_inputs, self.queue.device) if self.track_ids else None

    def exclusion(self, ids: Optional[torch.Tensor], repeat: int = 1):
        """The ``exclude`` argument of the losses in ``soco_d2.modeling.contrastive``:
        ``(query_ids, queue_ids)``, each of ``ids`` repeated ``repeat`` times (one per query
        row: DenseCL's cells) and a copy of the ring's ids; None when ``ids`` is None."""
        if ids is None:
            return None
        if not self.track_ids:
            raise ValueError("this KeyQueue records no image ids (track_ids=False)")
        return ids.repeat_interleave(repeat), self.ids.clone()

    def clone_keys(self) -> torch.Tensor:
        """(dim, size) detached copy of the ring.

        A copy, because the step's own enqueue writes the ring in place after the logits are
        built; autograd would otherwise see a saved input modified.
        """
        return self.queue.clone().detach()

    def keys_view(self) -> torch.Tensor:
        """(dim, size) the ring itself, detached, no copy: for a loss that reads the keys only
        while it runs and keeps nothing of them for backward (``contrastive.info_nce_loss``)."""
        return self.queue.detach()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}, track_ids={self.track_ids}"
