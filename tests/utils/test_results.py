"""results.md: mean +- std per init, pretraining time, paired verdict against scratch (or none)."""
import pytest

from soco_d2.utils.results import (
    format_console,
    methods_table,
    paired_compare,
    results_table,
    summarize,
)


def _runs(ap_by_seed, mask_offset=-1.0):
    return {
        f"seed{s}": {"bbox": {"AP": ap, "AP50": ap + 10}, "segm": {"AP": ap + mask_offset}}
        for s, ap in enumerate(ap_by_seed)
    }


def test_summary_and_paired_comparison_over_three_seeds():
    results = {"soco": _runs([30.0, 31.0, 32.0]), "scratch": _runs([20.0, 21.0, 23.0])}
    summary = summarize(results)
    assert summary["soco"]["bbox"]["AP"] == {"mean": 31.0, "std": 1.0, "n": 3}
    c = paired_compare(results, "soco", "scratch")
    assert c["seeds"] == ["seed0", "seed1", "seed2"] and c["diffs"] == [10.0, 10.0, 9.0]
    assert c["mean"] == pytest.approx(29 / 3) and c["std"] == pytest.approx(3**-0.5)
    assert c["n"] == 3 and c["verdict"] == "ahead"
    assert "| soco | 3 | 31.00 +- 1.00 | 30.00 +- 1.00 | - | +9.67 +- 0.58: ahead (3 seeds) |" \
        in methods_table(results)


def test_a_loss_beyond_the_spread_is_called_a_loss():
    # a method 9.6 AP below its baseline at every seed lost: the line must say so
    results = {"sim": _runs([46.0, 46.4, 46.3]), "scratch_vit": _runs([55.4, 55.3, 56.8])}
    c = paired_compare(results, "sim", "scratch_vit")
    assert c["mean"] < 0 and c["verdict"] == "behind"
    console = format_console(results, baselines={"sim": "scratch_vit"})
    assert "sim vs scratch_vit, box AP, paired by seed: -9.60 +- 0.82: behind (3 seeds)" in console
    close = {"a": _runs([20.0, 21.0, 22.0]), "scratch": _runs([21.0, 23.0, 21.5])}
    assert "-0.83 +- 1.26: within (3 seeds)" in methods_table(close)


def test_fewer_than_three_seeds_claim_nothing():
    results = {"soco": _runs([30.7]), "scratch": _runs([30.0])}
    c = paired_compare(results, "soco", "scratch")
    assert c["std"] is None and c["verdict"] is None and c["n"] == 1
    table = results_table(results, pretrain_seconds={"soco": 540.0})
    assert "| soco | 1 | 30.70 | 29.70 | 9.0 min | +0.70: no verdict (1 seed; 3 needed) |" in table
    assert "| scratch | 1 | 30.00 | 29.00 | - | - |" in table
    assert "ahead" not in table.replace("**ahead**", "")  # only the rule names it
    console = format_console(results)
    assert "soco vs scratch, box AP, paired by seed: +0.70: no verdict (1 seed; 3 needed)" \
        in console
    # two seeds ten points apart at each: still no verdict
    two = {"soco": _runs([30.0, 31.0]), "scratch": _runs([20.0, 21.0])}
    assert "+10.00 +- 0.00: no verdict (2 seeds; 3 needed)" in methods_table(two)


def test_methods_table_per_detector_baselines():
    results = {
        "soco": _runs([30.0, 32.0, 31.0]), "mocov2": _runs([25.0, 25.0, 25.0]),
        "scratch": _runs([24.0, 26.0, 25.0]), "sim": _runs([12.0, 14.0, 13.0]),
        "scratch_vit": _runs([10.0, 10.0, 10.0]), "ext": _runs([1.0, 1.0, 1.0]),
    }
    detectors = {n: "vit.yaml" if n in ("sim", "scratch_vit") else "r18.yaml" for n in results}
    baselines = {"soco": "scratch", "mocov2": "scratch", "sim": "scratch_vit"}  # ext: none
    table = methods_table(results, baselines, {"soco": 60.0, "mocov2": 90.0, "sim": 30.0},
                          detectors)
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}
    assert rows["soco"] == ("| soco | r18.yaml | 3 | 31.00 +- 1.00 | 30.00 +- 1.00 | 1.0 min | "
                            "+6.00 +- 0.00: ahead (3 seeds) |")
    assert rows["mocov2"].endswith("| 1.5 min | +0.00 +- 1.00: within (3 seeds) |")
    assert rows["sim"].endswith("| 0.5 min | +3.00 +- 1.00: ahead (3 seeds) vs scratch_vit |")
    assert rows["ext"].endswith("| - | - |") and rows["scratch_vit"].endswith("| - | - |")
    # no mask AP (a boxes-only detector): the cell says so
    boxes_only = {"a": {"seed0": {"bbox": {"AP": 5.0}}}}
    assert "| a | 1 | 5.00 | - | - | - |" in methods_table(boxes_only)
