"""Evaluating detector weights on a config's test set in this process."""
from typing import Dict, Sequence

__all__ = ["evaluate_weights"]


def evaluate_weights(config: str, opts: Sequence[str], weights: str, output_dir: str) -> Dict:
    """Evaluate ``weights`` on the config's DATASETS.TEST with the evaluator the trainer picks.

    Args:
        config: detector config; ``opts``: its ``KEY VALUE`` overrides.
        weights: a file for ``soco_d2.checkpoint.RestrictedCheckpointer`` (no pickled code run).
        output_dir: OUTPUT_DIR of the evaluation (the COCO evaluator writes
            ``inference/coco_instances_results.json`` there).

    Returns:
        the evaluator's dict, e.g. ``{"bbox": {"AP": ...}, "segm": {...}}``.
    """
    from soco_d2.checkpoint import RestrictedCheckpointer
    from soco_d2.engine import Trainer, load_cfg

    cfg = load_cfg(config, [*opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", output_dir])
    model = Trainer.build_model(cfg)
    RestrictedCheckpointer(model).load(weights)
    results = Trainer.test(cfg, model)
    return {k: dict(v) if isinstance(v, dict) else v for k, v in results.items()}
