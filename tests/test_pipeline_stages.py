"""Pipeline stages with the expensive parts faked: markers, resume after a failure, results."""
import json
import os

import pytest
import torch

from soco_d2 import pipeline
from soco_d2.checkpoint import GROUPS
from soco_d2.pipeline import PipelineSpec, StageRunner, parse_init, run_pipeline
from soco_d2.utils.results import compare, results_table, summarize


def _fake_metrics(seed, init):
    base = 30.0 if init == "soco" else 20.0
    bbox = {m: base + seed + i for i, m in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"])}
    bbox["APs"] = float("nan")  # COCOeval gives NaN for an empty size range
    segm = {k: v - 1.0 for k, v in bbox.items()}
    return {"bbox": bbox, "segm": segm}


class FakeTraining:
    """Stands in for tools/train_net.py: writes model_final.pth; can fail once on a run."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, config, output_dir, opts, log_path, threads=2):
        self.calls.append((os.path.basename(output_dir), list(opts)))
        if self.fail_on and output_dir.endswith(self.fail_on):
            self.fail_on = None
            raise RuntimeError("simulated crash in fine-tuning")
        os.makedirs(output_dir, exist_ok=True)
        if os.path.basename(output_dir) == "pretrain":
            state = {
                "backbone.bottom_up.stem.conv1.weight": torch.randn(4, 3, 3, 3),
                "backbone.fpn_lateral2.weight": torch.randn(4, 4, 1, 1),
                "roi_heads.box_head.fc1.weight": torch.randn(8, 4),
                "target.backbone.bottom_up.stem.conv1.weight": torch.randn(4, 3, 3, 3),
                "projector.0.weight": torch.randn(2, 2),
            }
            torch.save({"model": state, "iteration": 1}, f"{output_dir}/model_final.pth")
        else:
            torch.save({"model": {}}, f"{output_dir}/model_final.pth")


def _fake_evaluate(config, opts, weights, output_dir):
    seed = int(opts[opts.index("SEED") + 1])
    return _fake_metrics(seed, os.path.basename(output_dir).split("_seed")[0])


def _started(runner, since=0):
    return [e["stage"] for e in runner.history()[since:] if e["event"] == "started"]


def test_resume_after_failure_skips_finished_stages(tmp_path, monkeypatch):
    fake = FakeTraining(fail_on="scratch_seed0")
    monkeypatch.setattr(pipeline, "run_training", fake)
    monkeypatch.setattr(pipeline, "evaluate", _fake_evaluate)
    spec = PipelineSpec(
        output=str(tmp_path / "out"), pretrain_config="pre.yaml", finetune_config="ft.yaml",
        inits=["soco", "scratch"], seeds=[0, 1], plots=False,
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pipeline(spec)
    runner = StageRunner(spec.output)
    first = _started(runner)
    assert first == [
        "pretrain", "convert", "finetune/soco_seed0", "evaluate/soco_seed0",
        "finetune/soco_seed1", "evaluate/soco_seed1", "finetune/scratch_seed0",
    ]
    assert not runner.done("finetune/scratch_seed0")
    finished = ["pretrain", "convert", "finetune/soco_seed0", "evaluate/soco_seed1"]
    mtimes = {s: os.path.getmtime(runner.marker(s)) for s in finished}
    converted = tmp_path / "out/pretrain/model_converted.pkl"
    assert converted.exists()
    n_events = len(runner.history())

    results = run_pipeline(spec)
    second = _started(runner, n_events)
    assert second == [
        "finetune/scratch_seed0", "evaluate/scratch_seed0",
        "finetune/scratch_seed1", "evaluate/scratch_seed1",
    ]
    assert {s: os.path.getmtime(runner.marker(s)) for s in finished} == mtimes
    # the soco runs were trained from the converted weights, scratch from nothing
    soco_opts = dict(zip(fake.calls[1][1][::2], fake.calls[1][1][1::2]))
    assert soco_opts["MODEL.WEIGHTS"] == str(converted) and soco_opts["SEED"] == "0"
    scratch_opts = dict(zip(fake.calls[-1][1][::2], fake.calls[-1][1][1::2]))
    assert scratch_opts["MODEL.WEIGHTS"] == "" and scratch_opts["SEED"] == "1"
    assert scratch_opts["DATASETS.TEST"] == "()"  # evaluation runs once, in its own stage

    with open(tmp_path / "out/results.json") as f:
        saved = json.load(f)  # strict JSON: NaN became null
    assert set(saved) == {"soco", "scratch"}
    assert set(saved["soco"]) == {"seed0", "seed1"}
    assert saved["scratch"]["seed1"]["bbox"]["AP"] == 21.0
    assert saved["soco"]["seed0"]["bbox"]["APs"] is None
    assert set(saved["soco"]["seed0"]) == {"bbox", "segm"}
    assert results["soco"]["seed1"]["segm"]["AP"] == 30.0
    md = (tmp_path / "out/results.md").read_text()
    assert "| soco | 2 | 30.50 +- 0.71" in md  # mean and sample std of 30, 31

    # a third call redoes nothing
    n_events = len(runner.history())
    run_pipeline(spec)
    assert _started(runner, n_events) == []


def test_summary_and_comparison():
    results = {
        init: {f"seed{s}": _fake_metrics(s, init) for s in range(3)} for init in ("soco", "scratch")
    }
    summary = summarize(results)
    assert summary["soco"]["bbox"]["AP"]["mean"] == pytest.approx(31.0)
    assert summary["soco"]["bbox"]["AP"]["std"] == pytest.approx(1.0)
    assert "APs" not in summary["soco"]["bbox"]  # NaN everywhere: no mean
    c = compare(summary, "soco", "scratch")
    assert c["delta"] == pytest.approx(10.0) and c["two_std"] == pytest.approx(2.0)
    assert c["significant"]
    assert "soco vs scratch, box AP: +10.00 (more than twice" in results_table(results)


def test_parse_init():
    assert parse_init("soco") == ("soco", None)
    assert parse_init("moco=/w/m.pth") == ("moco", "/w/m.pth")
    for bad in ("imagenet", "=x.pth", "a/b=x.pth"):
        with pytest.raises(ValueError):
            parse_init(bad)


def test_training_command_resumes(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "run_command", lambda cmd, log, threads=2: seen.update(cmd=cmd))
    pipeline.run_training("a.yaml", str(tmp_path / "run"), ["SEED", "3"], str(tmp_path / "l.log"))
    cmd = seen["cmd"]
    assert cmd[1].endswith(os.path.join("tools", "train_net.py")) and "--resume" in cmd
    assert cmd[cmd.index("--config-file") + 1] == "a.yaml"
    assert cmd[cmd.index("OUTPUT_DIR") + 1] == str(tmp_path / "run") and cmd[-2:] == ["SEED", "3"]


def test_transfer_groups_reach_the_converted_weights(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setattr(pipeline, "run_training", FakeTraining())
    monkeypatch.setattr(pipeline, "evaluate", _fake_evaluate)
    spec = PipelineSpec(
        output=str(tmp_path / "out"), pretrain_config="pre.yaml", finetune_config="ft.yaml",
        inits=["soco"], seeds=[0], plots=False, transfer=["backbone", "fpn"],
    )
    run_pipeline(spec)
    with open(tmp_path / "out/pretrain/model_converted.pkl", "rb") as f:
        keys = set(pickle.load(f)["model"])
    assert keys == {"backbone.bottom_up.stem.conv1.weight", "backbone.fpn_lateral2.weight"}
    # the same output asked for other groups: a clear error, not a silent reuse
    spec.transfer = ["backbone", "fpn", "box_head"]
    with pytest.raises(ValueError, match="converted the groups"):
        run_pipeline(spec)
    # an unknown group fails before the pretraining, not after it
    fake = FakeTraining()
    monkeypatch.setattr(pipeline, "run_training", fake)
    spec.output, spec.transfer = str(tmp_path / "other"), ["backbone", "neck"]
    with pytest.raises(ValueError, match="subset of"):
        run_pipeline(spec)
    assert fake.calls == []


def test_failed_command_reports_log_tail(tmp_path):
    import sys

    with pytest.raises(RuntimeError, match="boom-42"):
        pipeline.run_command(
            [sys.executable, "-c", "import sys; print('boom-42', file=sys.stderr); sys.exit(3)"],
            str(tmp_path / "x.log"),
        )


def test_cli_preset_and_overrides(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))
    path = os.path.join(pipeline.REPO_ROOT, "tools", "pipeline.py")
    spec_ = importlib.util.spec_from_file_location("pipeline_cli", path)
    cli = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(cli)
    args = cli.get_parser().parse_args(
        ["--preset", "bench-transfer", "--output", "o", "--inits", "soco,moco=m.pth",
         "--finetune-opts", "SOLVER.MAX_ITER", "10"]
    )
    spec = cli.build_spec(args)
    assert spec.seeds == [0, 1, 2] and spec.inits == ["soco", "moco=m.pth"]
    assert spec.finetune_opts == ["SOLVER.MAX_ITER", "10"]
    assert spec.proposals[1] == str(tmp_path / "ds/demo/proposals_unlabeled")
    assert os.path.isfile(spec.pretrain_config) and os.path.isfile(spec.finetune_config)
    args = cli.get_parser().parse_args(["--preset", "demo", "--output", "o", "--seeds", "2"])
    demo = cli.build_spec(args)
    assert demo.seeds == [0, 1]
    # the bench fine-tunes twice as long as the demo, from the same pretraining
    from soco_d2.engine import load_cfg

    assert demo.pretrain_config == spec.pretrain_config
    assert load_cfg(demo.finetune_config, []).SOLVER.MAX_ITER == 400
    assert load_cfg(spec.finetune_config, []).SOLVER.MAX_ITER == 800
    with pytest.raises(SystemExit):
        cli.build_spec(cli.get_parser().parse_args(["--output", "o", "--inits", "scratch"]))
    args = ["--preset", "demo", "--output", "o", "--transfer", "backbone, fpn,box_head"]
    assert cli.build_spec(cli.get_parser().parse_args(args)).transfer == list(GROUPS)
    with pytest.raises(SystemExit):
        cli.build_spec(cli.get_parser().parse_args([*args[:-1], "backbone,neck"]))
