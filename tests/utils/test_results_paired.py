"""The paired verdict: per-seed differences, 3 seeds at least, the rule printed."""
import numpy as np
import pytest

from soco_d2.utils.results import (
    MIN_SEEDS,
    VERDICT_RULE,
    paired_compare,
    paired_verdict,
    results_table,
)


def _runs(ap_by_seed):
    return {f"seed{s}": {"bbox": {"AP": ap}} for s, ap in enumerate(ap_by_seed)}


def _unpaired_call(a, b):
    """The earlier, unpaired rule: |mean a - mean b| against twice the larger seed std."""
    delta = np.mean(a) - np.mean(b)
    two_std = 2 * max(np.std(a, ddof=1), np.std(b, ddof=1))
    return "within" if abs(delta) <= two_std else ("ahead" if delta > 0 else "behind")


@pytest.mark.parametrize(
    "init, base, unpaired, paired",
    [
        # docs/demo_results.md, full-label `make bench-methods` in one go: MoCo v2 vs scratch. The
        # low scratch seed 2 doubled scratch's std, hiding a loss at every seed
        ([53.03, 53.43, 53.01], [56.31, 57.32, 54.46], "within", "behind"),
        # both inits move together from seed to seed: a steady +1 is a gain
        ([31.0, 35.2, 32.8], [30.0, 34.0, 32.0], "within", "ahead"),
        # seeds anti-correlated: the means are apart, the differences are not steady
        ([30.0, 32.0, 31.0], [29.0, 27.0, 28.0], "ahead", "within"),
        # docs/demo_results.md, the full-label earlier draw: SoCo +2.50, ahead either way
        ([59.14, 59.75, 58.63], [56.55, 57.50, 55.96], "ahead", "ahead"),
    ],
)
def test_paired_and_unpaired_verdicts(init, base, unpaired, paired):
    assert _unpaired_call(init, base) == unpaired
    c = paired_compare({"a": _runs(init), "b": _runs(base)}, "a", "b")
    diffs = np.subtract(init, base)
    assert c["diffs"] == pytest.approx(list(diffs)) and c["n"] == 3
    assert c["mean"] == pytest.approx(diffs.mean()) and c["std"] == pytest.approx(diffs.std(ddof=1))
    assert c["verdict"] == paired


def test_behind_within_and_the_sign():
    behind = paired_compare({"a": _runs([1.0, 2.0, 3.0]), "b": _runs([3.0, 4.1, 4.9])}, "a", "b")
    assert behind["verdict"] == "behind"
    assert paired_verdict(behind) == "-2.00 +- 0.10: behind (3 seeds)"
    # equal at every seed: no spread, no difference: within, never ahead
    tie = paired_compare({"a": _runs([5.0, 6.0, 7.0]), "b": _runs([5.0, 6.0, 7.0])}, "a", "b")
    assert tie["std"] == 0.0 and tie["verdict"] == "within"


def test_too_few_paired_seeds_give_no_verdict():
    # four seeds of the init, two of the baseline: two pairs
    c = paired_compare({"a": _runs([40.0, 41.0, 42.0, 43.0]), "b": _runs([30.0, 30.5])}, "a", "b")
    assert c["seeds"] == ["seed0", "seed1"] and c["verdict"] is None
    assert paired_verdict(c) == f"+10.25 +- 0.35: no verdict (2 seeds; {MIN_SEEDS} needed)"
    # a seed with no AP (a failed evaluation) is not paired
    runs = _runs([40.0, 41.0, 42.0])
    runs["seed2"]["bbox"]["AP"] = float("nan")
    c = paired_compare({"a": runs, "b": _runs([30.0, 30.0, 30.0])}, "a", "b")
    assert c["n"] == 2 and c["verdict"] is None
    assert paired_compare({"a": _runs([1.0]), "b": {}}, "a", "b") is None
    assert paired_verdict(None) == "-"


def test_results_md_prints_the_rule_and_the_differences():
    results = {"soco": _runs([57.90, 59.13, 58.87]), "mocov2": _runs([53.03, 53.43, 53.01]),
               "scratch": _runs([56.31, 57.32, 54.46]), "late": _runs([57.0])}
    md = results_table(results)
    assert VERDICT_RULE in md and "twice their sample std" in VERDICT_RULE
    assert "| init - baseline | seed0 | seed1 | seed2 | mean | std | verdict |" in md
    assert "| soco - scratch | +1.59 | +1.81 | +4.41 | +2.60 | 1.57 | within (3 seeds) |" in md
    assert "| mocov2 - scratch | -3.28 | -3.89 | -1.45 | -2.87 | 1.27 | behind (3 seeds) |" in md
    assert "| late - scratch | +0.69 | - | - | +0.69 | - | no verdict (1 seed; 3 needed) |" in md
    # the methods table, mean +- std, 3 runs: the paired rows are "| soco - scratch |"
    assert md.count("| soco |") == 5
