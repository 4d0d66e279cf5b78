"""The plots of a pipeline output directory, drawn with ``soco_d2.utils.plots``."""
import os
from typing import List, Optional, Sequence

from soco_d2.utils.plots import plot_prediction_grid, plot_training_curves

__all__ = ["plot_pipeline"]


def plot_pipeline(
    out: str,
    inits: Sequence[str],
    seeds: Sequence[int],
    finetune_config: str,
    finetune_opts: Sequence[str] = (),
    pretrains: Sequence[str] = (),
    grid_inits: Optional[Sequence[str]] = None,
) -> List[str]:
    """All plots of a pipeline output directory (see :mod:`soco_d2.pipeline`) into ``out/plots``.

    Args:
        out: the pipeline's output directory.
        inits / seeds: the fine-tunes, ``out/finetune/<init>_seed<S>``.
        finetune_config / finetune_opts: the detector config whose DATASETS.TEST the
            prediction grid shows.
        pretrains: pretraining names, ``out/pretrain/<name>`` (one curve each).
        grid_inits: the inits fine-tuned with ``finetune_config`` (default: all).

    Returns:
        the PNG files written.
    """
    plots = os.path.join(out, "plots")
    written = []
    curves = {n: os.path.join(out, "pretrain", n, "metrics.json") for n in pretrains}
    if curves:
        written.append(plot_training_curves(curves, f"{plots}/pretrain_curves.png", "pretraining"))
    runs = {
        f"{i} seed{s}": os.path.join(out, "finetune", f"{i}_seed{s}", "metrics.json")
        for i in inits
        for s in seeds
    }
    written.append(plot_training_curves(runs, f"{plots}/finetune_curves.png", "fine-tuning"))
    if finetune_config:
        from soco_d2.engine import load_cfg

        cfg = load_cfg(finetune_config, list(finetune_opts))
        if cfg.DATASETS.TEST:
            seed = seeds[0]
            preds = {
                f"{i} (seed {seed})": os.path.join(
                    out, "finetune", f"{i}_seed{seed}", "inference", "coco_instances_results.json"
                )
                for i in (inits if grid_inits is None else grid_inits)
            }
            grid = f"{plots}/predictions.png"
            written.append(plot_prediction_grid(cfg.DATASETS.TEST[0], preds, grid))
    return [w for w in written if w]
