"""Collect per-run COCO metrics into ``results.json`` and a markdown table.

``results.json`` maps each init name to ``{"seed<S>": {"bbox": {...}, "segm": {...}}}``, the
inner dicts exactly as detectron2's ``COCOEvaluator`` returns them (NaN written as null, so the
file is strict JSON).
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .io import write_json_atomic  # re-exported: callers import it from here

__all__ = [
    "METRICS",
    "TASKS",
    "compare",
    "format_console",
    "methods_table",
    "results_table",
    "summarize",
    "verdict",
    "write_json_atomic",
]

TASKS = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def summarize(results: Mapping[str, Mapping[str, Mapping]]) -> Dict[str, Dict[str, Dict]]:
    """Mean and std over seeds of every metric.

    Args:
        results: ``{init: {seed name: {task: {metric: value}}}}``.

    Returns:
        ``{init: {task: {metric: {"mean", "std", "n"}}}}``; std is the sample std (ddof=1),
        0 for a single seed; metrics missing or None in a run are left out of its mean.
    """
    out: Dict[str, Dict[str, Dict]] = {}
    for init, runs in results.items():
        out[init] = {}
        for task in TASKS:
            per_metric = {}
            for metric in METRICS:
                vals = [
                    r[task][metric]
                    for r in runs.values()
                    if task in r and r[task].get(metric) is not None
                    and math.isfinite(r[task][metric])
                ]
                if vals:
                    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                    per_metric[metric] = {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}
            if per_metric:
                out[init][task] = per_metric
    return out


def compare(summary: Mapping, init: str, baseline: str, task: str = "bbox") -> Optional[Dict]:
    """AP difference of ``init`` over ``baseline`` and whether it exceeds twice the seed std.

    Returns:
        ``{"delta", "two_std", "significant", "seeds"}``: ``seeds`` is the smaller seed count
        of the two; with fewer than two seeds there is no spread estimate, and ``two_std`` and
        ``significant`` are None. ``two_std`` uses the larger of the two stds; ``significant``
        is ``|delta| > two_std``, a loss as much as a gain (the sign of ``delta`` says which).
        None when either has no AP for ``task``.
    """
    try:
        a, b = summary[init][task]["AP"], summary[baseline][task]["AP"]
    except KeyError:
        return None
    delta = a["mean"] - b["mean"]
    seeds = min(a["n"], b["n"])
    if seeds < 2:
        return {"delta": delta, "two_std": None, "significant": None, "seeds": seeds}
    two_std = 2.0 * max(a["std"], b["std"])
    return {"delta": delta, "two_std": two_std, "significant": abs(delta) > two_std,
            "seeds": seeds}


def verdict(c: Optional[Mapping]) -> str:
    """One line for a :func:`compare` result, e.g. ``+1.88 (ahead by more than twice the seed
    std, 1.28)``, ``-9.61 (behind by more than twice the seed std, 1.64)``, ``+0.75 (not more
    than twice the seed std, 2.02)`` or ``+0.70 (one seed: no spread estimate)``."""
    if c is None:
        return "-"
    if c["significant"] is None:
        return f"{c['delta']:+.2f} (one seed: no spread estimate)"
    if not c["significant"]:
        return f"{c['delta']:+.2f} (not more than twice the seed std, {c['two_std']:.2f})"
    side = "ahead" if c["delta"] > 0 else "behind"
    return f"{c['delta']:+.2f} ({side} by more than twice the seed std, {c['two_std']:.2f})"


def _default_baselines(inits: Sequence[str]) -> Dict[str, str]:
    return {i: "scratch" for i in inits if i != "scratch"} if "scratch" in inits else {}


def _minutes(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def methods_table(
    results: Mapping[str, Mapping[str, Mapping]],
    baselines: Optional[Mapping[str, str]] = None,
    pretrain_seconds: Optional[Mapping[str, Optional[float]]] = None,
    detectors: Optional[Mapping[str, str]] = None,
) -> str:
    """The comparison: one row per init with box and mask AP (mean +- std over seeds), the
    pretraining wall time and the box-AP verdict against its scratch baseline.

    Args:
        results: ``{init: {seed name: {task: {metric: value}}}}``.
        baselines: init -> the init it is compared with (default: every init vs ``scratch``).
        pretrain_seconds: init -> wall time of its pretraining (absent: ``-``).
        detectors: init -> the detector it was fine-tuned with (adds a column).

    Returns:
        markdown table lines joined by newlines.
    """
    summary = summarize(results)
    baselines = _default_baselines(list(results)) if baselines is None else baselines
    pretrain_seconds = pretrain_seconds or {}
    head = ["init", *(["detector"] if detectors else []), "seeds", "box AP", "mask AP",
            "pretraining", "box AP vs scratch"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for init, runs in results.items():
        tasks = summary.get(init, {})
        cells = [init, *([detectors.get(init, "-")] if detectors else []), str(len(runs))]
        cells += [_cell(tasks.get(t, {}).get("AP")) for t in TASKS]
        cells.append(_minutes(pretrain_seconds.get(init)))
        base = baselines.get(init)
        c = compare(summary, init, base) if base in summary else None
        # a baseline other than plain scratch (e.g. scratch_vit) is named in its cell
        cells.append(verdict(c) + (f" vs {base}" if c is not None and base != "scratch" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_table(
    results: Mapping[str, Mapping[str, Mapping]],
    baselines: Optional[Mapping[str, str]] = None,
    pretrain_seconds: Optional[Mapping[str, Optional[float]]] = None,
    detectors: Optional[Mapping[str, str]] = None,
) -> str:
    """Markdown: :func:`methods_table`, then every metric as mean +- std per init and per run.

    Arguments are those of :func:`methods_table`.
    """
    summary = summarize(results)
    lines: List[str] = ["### Methods", "", methods_table(results, baselines, pretrain_seconds,
                                                           detectors), ""]
    cols = [f"{t} {m}" for t in TASKS for m in METRICS]
    sections = (("Mean +- std over seeds", _mean_rows(summary)), ("Per run", _run_rows(results)))
    for title, rows in sections:
        lines += [f"### {title}", "", "| init | runs | " + " | ".join(cols) + " |"]
        lines.append("|---" * (len(cols) + 2) + "|")
        lines += rows
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cell(values: Optional[Mapping]) -> str:
    if values is None:
        return "-"
    if values["n"] > 1:
        return f"{values['mean']:.2f} +- {values['std']:.2f}"
    return f"{values['mean']:.2f}"


def _mean_rows(summary: Mapping) -> List[str]:
    rows = []
    for init, tasks in summary.items():
        n = max((v["n"] for t in tasks.values() for v in t.values()), default=0)
        cells = [_cell(tasks.get(t, {}).get(m)) for t in TASKS for m in METRICS]
        rows.append(f"| {init} | {n} | " + " | ".join(cells) + " |")
    return rows


def _run_rows(results: Mapping) -> List[str]:
    rows = []
    for init, runs in results.items():
        for seed, r in runs.items():
            cells = []
            for t in TASKS:
                for m in METRICS:
                    v = r.get(t, {}).get(m)
                    cells.append("-" if v is None or not math.isfinite(v) else f"{v:.2f}")
            rows.append(f"| {init} | {seed} | " + " | ".join(cells) + " |")
    return rows


def format_console(
    results: Mapping[str, Mapping[str, Mapping]],
    metrics: Sequence[str] = ("AP", "AP50", "AP75"),
    baselines: Optional[Mapping[str, str]] = None,
) -> str:
    """A narrow table for the terminal: box and mask AP per init, mean +- std, then one
    verdict line per compared init (``baselines`` as in :func:`methods_table`)."""
    summary = summarize(results)
    head = f"{'init':<12}" + "".join(f"{'box ' + m:>16}" for m in metrics)
    head += "".join(f"{'mask ' + m:>16}" for m in metrics)
    lines = [head]
    for init, tasks in summary.items():
        row = f"{init:<12}"
        for t in TASKS:
            for m in metrics:
                row += f"{_cell(tasks.get(t, {}).get(m)):>16}"
        lines.append(row)
    baselines = _default_baselines(list(results)) if baselines is None else baselines
    for init, base in baselines.items():
        c = compare(summary, init, base) if init in summary and base in summary else None
        if c is not None:
            lines.append(f"{init} vs {base}, box AP: {verdict(c)}")
    return "\n".join(lines)
