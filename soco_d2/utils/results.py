"""Collect per-run COCO metrics into ``results.json`` and a markdown table.

``results.json`` maps each init name to ``{"seed<S>": {"bbox": {...}, "segm": {...}}}``, the
inner dicts exactly as detectron2's ``COCOEvaluator`` returns them (NaN written as null, so the
file is strict JSON).
"""
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "METRICS",
    "TASKS",
    "compare",
    "format_console",
    "results_table",
    "summarize",
    "write_json_atomic",
]

TASKS = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _strict(obj):
    """Replace NaN/inf by None recursively (json.dump would write non-standard NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.generic):
        return _strict(obj.item())
    return obj


def write_json_atomic(obj, path: str) -> None:
    """Write ``obj`` as strict JSON via a temporary file and ``os.replace``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_strict(obj), f, indent=2)
    os.replace(tmp, path)


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
        ``{"delta", "two_std", "significant"}`` (two_std uses the larger of the two stds), or
        None when either has no AP for ``task``.
    """
    try:
        a, b = summary[init][task]["AP"], summary[baseline][task]["AP"]
    except KeyError:
        return None
    two_std = 2.0 * max(a["std"], b["std"])
    delta = a["mean"] - b["mean"]
    return {"delta": delta, "two_std": two_std, "significant": delta > two_std}


def results_table(results: Mapping[str, Mapping[str, Mapping]]) -> str:
    """Markdown: mean +- std per init over seeds, then every run, for bbox and segm."""
    summary = summarize(results)
    lines: List[str] = []
    cols = [f"{t} {m}" for t in TASKS for m in METRICS]
    sections = (("Mean +- std over seeds", _mean_rows(summary)), ("Per run", _run_rows(results)))
    for title, rows in sections:
        lines += [f"### {title}", "", "| init | runs | " + " | ".join(cols) + " |"]
        lines.append("|---" * (len(cols) + 2) + "|")
        lines += rows
        lines.append("")
    inits = list(results)
    if "scratch" in inits:
        for init in inits:
            c = compare(summary, init, "scratch") if init != "scratch" else None
            if c is not None:
                verdict = "more" if c["significant"] else "not more"
                lines.append(
                    f"- {init} vs scratch, box AP: {c['delta']:+.2f} ({verdict} than twice the"
                    f" seed std, {c['two_std']:.2f})"
                )
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
    results: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str] = ("AP", "AP50", "AP75")
) -> str:
    """A narrow table for the terminal: box and mask AP per init, mean +- std."""
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
    return "\n".join(lines)
