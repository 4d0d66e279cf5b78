"""End to end on tiny generated data: every real stage, an interruption, and a resume."""
import json
import os

import pytest

from soco_d2.pipeline import PipelineSpec, StageRunner, run_pipeline
from soco_d2.pipeline import run as pipeline
from _configs import PIPELINE_FINETUNE_OPTS, PIPELINE_PRETRAIN_OPTS
from _paths import REPO_ROOT as REPO

pytestmark = [
    pytest.mark.spawns,  # every training runs as a subprocess
    pytest.mark.skipif(
        not os.path.isfile(os.path.join(REPO, "tools", "train_net.py")),
        reason="tools/train_net.py (engine) not available",
    ),
]


def test_pipeline_tiny_run_resumes_after_interruption(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    demo = root / "demo"
    spec = PipelineSpec(
        output=str(tmp_path / "out"),
        pretrains={"soco": os.path.join(REPO, "configs/demo/soco_R18_FPN_demo.yaml")},
        finetune_config=os.path.join(REPO, "configs/demo/mask_rcnn_R18_FPN_demo.yaml"),
        inits=["soco", "scratch"],
        seeds=[0],
        pretrain_opts=PIPELINE_PRETRAIN_OPTS,
        finetune_opts=PIPELINE_FINETUNE_OPTS,
        demo_data=dict(num_unlabeled=6, num_train=4, num_val=2, image_size=64),
        proposals=(str(demo / "unlabeled"), str(demo / "proposals_unlabeled")),
        selective_search_args=["--no-progress", "--min-side", "8"],
        threads=1,
    )
    real_training = pipeline.run_training

    def interrupted_training(config, output_dir, opts, log_path, threads=2, launch_args=()):
        if output_dir.endswith("scratch_seed0"):
            # run one of the two iterations, then "crash": the stage must not be marked done
            real_training(config, output_dir, [*opts, "SOLVER.MAX_ITER", "1"], log_path, threads)
            raise KeyboardInterrupt("simulated interruption")
        real_training(config, output_dir, opts, log_path, threads)

    monkeypatch.setattr(pipeline, "run_training", interrupted_training)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(spec)
    runner = StageRunner(spec.output)
    done_first = ["data", "proposals", "pretrain/soco", "convert/soco", "finetune/soco_seed0",
                  "evaluate/soco_seed0"]
    assert all(runner.done(s) for s in done_first)
    assert not runner.done("finetune/scratch_seed0")
    mtimes = {s: os.path.getmtime(runner.marker(s)) for s in done_first}
    n_events = len(runner.history())

    monkeypatch.setattr(pipeline, "run_training", real_training)
    results = run_pipeline(spec)
    started = [e["stage"] for e in runner.history()[n_events:] if e["event"] == "started"]
    assert started == ["finetune/scratch_seed0", "evaluate/scratch_seed0"]
    assert {s: os.path.getmtime(runner.marker(s)) for s in done_first} == mtimes
    # the interrupted fine-tune continued from its checkpoint instead of starting over
    log = (tmp_path / "out/logs/finetune_scratch_seed0.log").read_text()
    assert "Starting training from iteration 1" in log

    with open(tmp_path / "out/results.json") as f:
        saved = json.load(f)
    assert set(saved) == {"soco", "scratch"}
    for init in saved:
        run = saved[init]["seed0"]
        assert {"bbox", "segm"} <= set(run)
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(run["bbox"])
    assert results["soco"]["seed0"]["bbox"].keys() == saved["soco"]["seed0"]["bbox"].keys()
    md = (tmp_path / "out/results.md").read_text()
    assert md.count("| soco |") == 3  # the methods table, mean +- std, the run
    assert "| soco | 1 | 0" in md and "min | " in md and ": no verdict (1 seed; 3 needed)" in md
    assert (tmp_path / "out/plots/finetune_curves.png").stat().st_size > 0
    assert (tmp_path / "out/plots/pretrain_curves.png").stat().st_size > 0
    assert (tmp_path / "out/plots/predictions.png").stat().st_size > 0
