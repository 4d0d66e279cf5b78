"""DetCo's loss: per level, InfoNCE between global and local embeddings, weighted by level.

With the query from view 1 and the key from view 2, q_g / k_g the global and q_l / k_l the local
(jigsaw) embeddings of one level and NCE MoCo's InfoNCE
(:func:`soco_d2.modeling.contrastive.info_nce_loss`)::

    "global"           NCE(q_g, k_g, global queue)
    "local"            NCE(q_l, k_l, local queue)
    "global_to_local"  NCE(q_g, k_l, local queue)     (cross term, global query)
    "local_to_global"  NCE(q_l, k_g, global queue)    (cross term, local query)
    loss_<level>       = weight_<level> * (sum of the level's terms)

A term's negatives come from the queue of its key's kind, so a positive can never be told
from the negatives by being a global rather than a local vector (or the reverse).
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from ..contrastive import info_nce_loss

__all__ = ["CROSS_DIRECTIONS", "detco_level_terms", "weight_level_losses"]

# The two possible cross terms, named by query kind -> key kind.
CROSS_DIRECTIONS = ("global_to_local", "local_to_global")


def detco_level_terms(
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    queue_global: torch.Tensor,
    temperature: float,
    q_local: Optional[torch.Tensor] = None,
    k_local: Optional[torch.Tensor] = None,
    queue_local: Optional[torch.Tensor] = None,
    cross_directions: Sequence[str] = CROSS_DIRECTIONS,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> Dict[str, torch.Tensor]:
    """The InfoNCE terms of one level.

    Args:
        q_global, k_global: (N, D) normalised global query / key embeddings.
        queue_global: (D, K) global negatives of this level.
        temperature: T.
        q_local, k_local, queue_local: the same for the jigsaw patch sets; None: global only.
        cross_directions: subset of ("global_to_local", "local_to_global").
        exclude: ``(query_ids, queue_ids)``, (N,) and (K,) image ids, or None: a queue key of
            the query's own image is left out of its negatives; one ``queue_ids`` serves both
            queues, which are written in step.

    Returns:
        name -> scalar: "global", and with local inputs "local" plus one per cross direction.
    """
    def nce(q, k, queue):
        return info_nce_loss(q, k, queue, temperature, exclude)

    terms = {"global": nce(q_global, k_global, queue_global)}
    if q_local is None:
        return terms
    terms["local"] = nce(q_local, k_local, queue_local)
    if "global_to_local" in cross_directions:
        terms["global_to_local"] = nce(q_global, k_local, queue_local)
    if "local_to_global" in cross_directions:
        terms["local_to_global"] = nce(q_local, k_global, queue_global)
    return terms


def weight_level_losses(
    terms: Mapping[str, Mapping[str, torch.Tensor]], weights: Mapping[str, float]
) -> Dict[str, torch.Tensor]:
    """One loss per level: its weight times the sum of its terms.

    Args:
        terms: level -> term name -> scalar (:func:`detco_level_terms`).
        weights: level -> weight.

    Returns:
        ``{"loss_<level>": weights[level] * sum(terms[level].values())}``.
    """
    return {f"loss_{lvl}": weights[lvl] * sum(t.values()) for lvl, t in terms.items()}
