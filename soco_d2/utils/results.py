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
    "MIN_SEEDS",
    "TASKS",
    "VERDICT_RULE",
    "format_console",
    "methods_table",
    "paired_compare",
    "paired_verdict",
    "results_table",
    "summarize",
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


# Seeds a verdict needs: fewer give a mean difference but no call.
MIN_SEEDS = 3

VERDICT_RULE = (
    "Verdict (box AP against the init's baseline, paired by seed): for every seed s that both "
    "ran, d_s = AP(init, seed s) - AP(baseline, seed s), where seed s of every init is the same "
    "fine-tune seed (cfg.SEED: the same labelled images, in the same order, with the same "
    "augmentation draws); **ahead** when the mean of the d_s exceeds twice their sample std "
    "(ddof=1), **behind** when it is below minus twice it, **within** otherwise; with fewer than "
    f"{MIN_SEEDS} paired seeds, no verdict."
)


def _value(run: Mapping, task: str, metric: str) -> Optional[float]:
    v = run.get(task, {}).get(metric)
    return float(v) if v is not None and math.isfinite(v) else None


def paired_compare(
    results: Mapping[str, Mapping[str, Mapping]],
    init: str,
    baseline: str,
    task: str = "bbox",
    metric: str = "AP",
) -> Optional[Dict]:
    """Per-seed differences of ``init`` over ``baseline`` and the verdict of
    :data:`VERDICT_RULE`.

    Args:
        results: ``{init: {seed name: {task: {metric: value}}}}``.
        init / baseline: two keys of ``results``.
        task / metric: what is compared (box AP by default).

    Returns:
        ``{"seeds", "diffs", "n", "mean", "std", "verdict"}`` over the seed names both have a
        finite value for, in ``init``'s order: ``std`` is the sample std (None for one seed),
        ``verdict`` "ahead", "behind", "within", or None below :data:`MIN_SEEDS` seeds. None when
        no seed is shared.
    """
    a, b = results.get(init, {}), results.get(baseline, {})
    seeds = [
        s for s in a
        if s in b and _value(a[s], task, metric) is not None
        and _value(b[s], task, metric) is not None
    ]
    if not seeds:
        return None
    diffs = [_value(a[s], task, metric) - _value(b[s], task, metric) for s in seeds]
    n, mean = len(diffs), float(np.mean(diffs))
    std = float(np.std(diffs, ddof=1)) if n > 1 else None
    call = None
    if n >= MIN_SEEDS:
        if mean > 2.0 * std and mean > 0:
            call = "ahead"
        elif mean < -2.0 * std:
            call = "behind"
        else:
            call = "within"
    return {"seeds": seeds, "diffs": diffs, "n": n, "mean": mean, "std": std, "verdict": call}


def paired_verdict(c: Optional[Mapping]) -> str:
    """One cell for a :func:`paired_compare` result: the mean difference, +- the std of the
    differences, and the call, e.g. ``+2.50 +- 0.22: ahead (3 seeds)``, ``-2.87 +- 1.27: behind
    (3 seeds)``, ``+2.60 +- 1.57: within (3 seeds)`` or ``+1.50 +- 0.71: no verdict (2 seeds; 3
    needed)``; ``-`` for None."""
    if c is None:
        return "-"
    text = f"{c['mean']:+.2f}" + (f" +- {c['std']:.2f}" if c["std"] is not None else "")
    return f"{text}: {_call(c)}"


def _call(c: Mapping) -> str:
    n = c["n"]
    if c["verdict"] is None:
        return f"no verdict ({n} seed{'s' if n != 1 else ''}; {MIN_SEEDS} needed)"
    return f"{c['verdict']} ({n} seeds)"


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
    pretraining wall time and the paired box-AP verdict against its scratch baseline
    (:func:`paired_verdict`).

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
        c = paired_compare(results, init, base) if base in results else None
        # a baseline other than plain scratch (e.g. scratch_vit) is named in its cell
        cells.append(
            paired_verdict(c) + (f" vs {base}" if c is not None and base != "scratch" else "")
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_table(
    results: Mapping[str, Mapping[str, Mapping]],
    baselines: Optional[Mapping[str, str]] = None,
    pretrain_seconds: Optional[Mapping[str, Optional[float]]] = None,
    detectors: Optional[Mapping[str, str]] = None,
) -> str:
    """Markdown: :func:`methods_table`, the verdict rule and the per-seed box-AP differences
    behind each verdict, then every metric as mean +- std per init and per run.

    Arguments are those of :func:`methods_table`.
    """
    summary = summarize(results)
    baselines = _default_baselines(list(results)) if baselines is None else baselines
    lines: List[str] = ["### Methods", "", methods_table(results, baselines, pretrain_seconds,
                                                           detectors), ""]
    lines += _paired_section(results, baselines)
    cols = [f"{t} {m}" for t in TASKS for m in METRICS]
    sections = (("Mean +- std over seeds", _mean_rows(summary)), ("Per run", _run_rows(results)))
    for title, rows in sections:
        lines += [f"### {title}", "", "| init | runs | " + " | ".join(cols) + " |"]
        lines.append("|---" * (len(cols) + 2) + "|")
        lines += rows
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _paired_section(results: Mapping, baselines: Mapping[str, str]) -> List[str]:
    """The rule, then one row per compared init: its box-AP difference at every seed."""
    pairs = [(i, b, paired_compare(results, i, b)) for i, b in baselines.items()
             if i in results and b in results]
    pairs = [p for p in pairs if p[2] is not None]
    lines = ["### Paired differences (box AP, init - baseline, per seed)", "", VERDICT_RULE, ""]
    if not pairs:
        return lines + ["No init has a baseline with a seed in common.", ""]
    seeds = list(dict.fromkeys(s for _, _, c in pairs for s in c["seeds"]))
    head = ["init - baseline", *seeds, "mean", "std", "verdict"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for init, base, c in pairs:
        by_seed = dict(zip(c["seeds"], c["diffs"]))
        cells = [f"{by_seed[s]:+.2f}" if s in by_seed else "-" for s in seeds]
        std = "-" if c["std"] is None else f"{c['std']:.2f}"
        row = [f"{init} - {base}", *cells, f"{c['mean']:+.2f}", std, _call(c)]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


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
    paired verdict line per compared init (``baselines`` as in :func:`methods_table`)."""
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
        c = paired_compare(results, init, base) if init in results and base in results else None
        if c is not None:
            lines.append(f"{init} vs {base}, box AP, paired by seed: {paired_verdict(c)}")
    return "\n".join(lines)
