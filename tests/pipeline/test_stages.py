"""Pipeline stages, expensive parts faked: markers, resume, several pretrainings, clashes."""
import json
import os
import pickle
import threading
import time

import numpy as np
import pytest
import torch

from soco_d2.checkpoint import DetectorMismatchError
from soco_d2.pipeline import PipelineSpec, StageRunner, parse_init, run_pipeline
from soco_d2.pipeline import run as run_mod
from soco_d2.pipeline import stages as stages_mod
from _paths import REPO_ROOT

PRE = os.path.join(REPO_ROOT, "configs/pretrain/soco_R18_FPN_tiny.yaml")
FT = os.path.join(REPO_ROOT, "configs/demo/mask_rcnn_R18_FPN_demo.yaml")

# the online keys a fake pretraining saves, and the detector tensors they must fit
_SHAPES = {
    "backbone.bottom_up.stem.conv1.weight": (4, 3, 3, 3),
    "backbone.fpn_lateral2.weight": (4, 4, 1, 1),
    "roi_heads.box_head.fc1.weight": (8, 4),
}


def _fake_metrics(seed, init):
    base = 20.0 if init.startswith("scratch") else 30.0
    bbox = {m: base + seed + i for i, m in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"])}
    bbox["APs"] = float("nan")  # COCOeval gives NaN for an empty size range
    segm = {k: v - 1.0 for k, v in bbox.items()}
    return {"bbox": bbox, "segm": segm}


class FakeTraining:
    """Stands in for tools/train_net.py: writes model_final.pth; can fail once on a run."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on
        self.threads = {}  # run -> threads it was given
        self.seconds = 0.0  # how long a fine-tune takes
        self.active, self.most_active = 0, 0
        self.lock = threading.Lock()

    def __call__(self, config, output_dir, opts, log_path, threads=2, launch_args=()):
        run = os.path.basename(output_dir)
        self.calls.append((run, list(opts), list(launch_args)))
        self.threads[run] = threads
        if self.fail_on and output_dir.endswith(self.fail_on):
            self.fail_on = None
            raise RuntimeError("simulated crash in fine-tuning")
        if "_seed" in run:
            with self.lock:
                self.active += 1
                self.most_active = max(self.most_active, self.active)
            time.sleep(self.seconds)
            with self.lock:
                self.active -= 1
        os.makedirs(output_dir, exist_ok=True)
        if os.path.basename(os.path.dirname(output_dir)) == "pretrain":
            state = {k: torch.randn(s) for k, s in _SHAPES.items()}
            state["target.backbone.bottom_up.stem.conv1.weight"] = torch.randn(4, 3, 3, 3)
            state["projector.0.weight"] = torch.randn(2, 2)
            torch.save({"model": state, "iteration": 1}, f"{output_dir}/model_final.pth")
        else:
            torch.save({"model": {}}, f"{output_dir}/model_final.pth")

    def opts(self, i):
        o = self.calls[i][1]
        return dict(zip(o[::2], o[1::2]))


def _fake_evaluate(config, opts, weights, output_dir):
    seed = int(opts[opts.index("SEED") + 1])
    return _fake_metrics(seed, os.path.basename(output_dir).split("_seed")[0])


@pytest.fixture
def fake(monkeypatch):
    training = FakeTraining()
    monkeypatch.setattr(run_mod, "run_training", training)
    monkeypatch.setattr(run_mod, "evaluate", _fake_evaluate)
    built = []

    def detector_state(config, opts):
        built.append(config)
        return {k: torch.zeros(s) for k, s in _SHAPES.items()}

    monkeypatch.setattr(run_mod, "detector_state", detector_state)
    training.built = built
    return training


def _started(runner, since=0):
    return [e["stage"] for e in runner.history()[since:] if e["event"] == "started"]


def _spec(tmp_path, **kw):
    base = dict(output=str(tmp_path / "out"), pretrains={"soco": PRE}, finetune_config=FT,
                seeds=[0], plots=False)
    return PipelineSpec(**{**base, **kw})


def test_resume_after_failure_skips_finished_stages(tmp_path, fake):
    fake.fail_on = "scratch_seed0"
    spec = _spec(tmp_path, inits=["soco", "scratch"], seeds=[0, 1])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pipeline(spec)
    runner = StageRunner(spec.output)
    assert _started(runner) == [
        "pretrain/soco", "convert/soco", "finetune/soco_seed0", "evaluate/soco_seed0",
        "finetune/scratch_seed0",
    ]
    assert not runner.done("finetune/scratch_seed0")
    finished = ["pretrain/soco", "convert/soco", "finetune/soco_seed0", "evaluate/soco_seed0"]
    mtimes = {s: os.path.getmtime(runner.marker(s)) for s in finished}
    converted = tmp_path / "out/pretrain/soco/model_converted.pkl"
    assert converted.exists()
    n_events = len(runner.history())

    results = run_pipeline(spec)
    # seed-major: every init at seed 0 before any at seed 1
    assert _started(runner, n_events) == [
        "finetune/scratch_seed0", "evaluate/scratch_seed0",
        "finetune/soco_seed1", "evaluate/soco_seed1",
        "finetune/scratch_seed1", "evaluate/scratch_seed1",
    ]
    assert {s: os.path.getmtime(runner.marker(s)) for s in finished} == mtimes
    assert fake.calls[0][0] == "soco" and fake.opts(0) == {}  # OUTPUT_DIR is pretrain/soco
    assert fake.opts(1)["MODEL.WEIGHTS"] == str(converted) and fake.opts(1)["SEED"] == "0"
    assert fake.opts(-1)["MODEL.WEIGHTS"] == "" and fake.opts(-1)["SEED"] == "1"
    assert fake.opts(-1)["DATASETS.TEST"] == "()"  # evaluation runs once, in its own stage
    assert fake.built == [FT]  # the detector was built once, to check the conversion

    saved = json.loads((tmp_path / "out/results.json").read_text())  # strict: NaN is null
    assert set(saved) == {"soco", "scratch"} and set(saved["soco"]) == {"seed0", "seed1"}
    assert saved["scratch"]["seed1"]["bbox"]["AP"] == 21.0
    assert saved["soco"]["seed0"]["bbox"]["APs"] is None
    assert results["soco"]["seed1"]["segm"]["AP"] == 30.0
    md = (tmp_path / "out/results.md").read_text()
    assert "Fine-tune configs: `configs/demo/mask_rcnn_R18_FPN_demo.yaml`\n" in md  # repo-relative
    assert "| soco | 2 | 30.50 +- 0.71 | 31.50 +- 0.71 |" in md  # every metric: mean, sample std
    pre_min = StageRunner(spec.output).seconds("pretrain/soco") / 60
    assert (
        f"| soco | 2 | 30.50 +- 0.71 | 29.50 +- 0.71 | {pre_min:.1f} min | +10.00 +- 0.00: no "
        "verdict (2 seeds; 3 needed) |" in md
    )

    n_events = len(runner.history())
    run_pipeline(spec)  # a third call redoes nothing
    assert _started(runner, n_events) == []


def test_adding_a_pretraining_runs_only_its_stages(tmp_path, fake):
    spec = _spec(tmp_path, pretrains={"a": PRE}, inits=["a", "scratch"])
    run_pipeline(spec)
    runner = StageRunner(spec.output)
    done_a = ["pretrain/a", "convert/a", "finetune/a_seed0", "finetune/scratch_seed0"]
    mtimes = {s: os.path.getmtime(runner.marker(s)) for s in done_a}
    n_events = len(runner.history())

    spec.pretrains, spec.inits = {"a": PRE, "b": PRE}, []  # default: every pretraining + scratch
    run_pipeline(spec)
    assert _started(runner, n_events) == [
        "pretrain/b", "convert/b", "finetune/b_seed0", "evaluate/b_seed0"
    ]
    assert {s: os.path.getmtime(runner.marker(s)) for s in done_a} == mtimes
    assert (tmp_path / "out/pretrain/b/model_converted.pkl").exists()
    md = (tmp_path / "out/results.md").read_text()
    assert "| b |" in md and "| a |" in md
    # the same name with another config is an error, not a silent reuse
    spec.pretrain_opts = ["SOLVER.MAX_ITER", "3"]
    with pytest.raises(ValueError, match="stage pretrain/a was done with opts"):
        run_pipeline(spec)


@pytest.mark.parametrize(
    "pretrains, inits, match",
    [
        ({"soco": PRE}, ["soco=w.pth"], "already names a pretraining"),
        ({}, ["soco"], "no pretraining is named 'soco'"),
        ({"scratch_x": PRE}, [], "random initialisation"),
        ({"a b": PRE}, [], r"must match \[A-Za-z0-9_-\]\+"),
        ({"soco": ""}, [], "--pretrain soco: no config"),
        ({"soco": PRE}, ["soco", "soco"], "given twice"),
        ({}, ["moco=/nowhere/m.pth"], "checkpoint not found"),
    ],
)
def test_clashes_fail_before_any_stage(tmp_path, fake, pretrains, inits, match):
    spec = _spec(tmp_path, pretrains=pretrains, inits=inits)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run_pipeline(spec)
    assert fake.calls == [] and not os.path.exists(spec.output)


def test_jobs_run_fine_tunes_side_by_side_with_their_share_of_threads(
    tmp_path, fake, monkeypatch
):
    fake.seconds = 0.3

    def slow_evaluate(*args):
        time.sleep(0.6)
        return _fake_evaluate(*args)

    monkeypatch.setattr(run_mod, "evaluate", slow_evaluate)
    spec = _spec(tmp_path, inits=["soco", "scratch"], seeds=[0, 1], threads=4, jobs=2)
    results = run_pipeline(spec)
    assert fake.most_active == 2  # two fine-tunes ran at once
    # a finished fine-tune's slot trains the next one while its evaluation runs
    at = {(e["stage"], e["event"]): e["time"] for e in StageRunner(spec.output).history()}
    assert at[("finetune/soco_seed1", "started")] < at[("evaluate/soco_seed0", "finished")]
    assert fake.threads == {"soco": 4, "soco_seed0": 2, "scratch_seed0": 2, "soco_seed1": 2,
                            "scratch_seed1": 2}  # the pretraining keeps every thread
    # the same results and files as one at a time
    fake.most_active, fake.seconds = 0, 0.0
    monkeypatch.setattr(run_mod, "evaluate", _fake_evaluate)
    one = _spec(tmp_path, output=str(tmp_path / "one"), inits=["soco", "scratch"], seeds=[0, 1])
    assert run_pipeline(one) == results and fake.most_active == 1
    assert (tmp_path / "out/results.md").read_text() == (tmp_path / "one/results.md").read_text()
    runner = StageRunner(spec.output)
    assert all(runner.done(f"evaluate/{i}_seed{s}") for i in ("soco", "scratch") for s in (0, 1))
    with pytest.raises(ValueError, match="jobs"):
        run_pipeline(_spec(tmp_path, output=str(tmp_path / "bad"), jobs=0))
    with pytest.raises(ValueError, match="one at a time"):
        run_pipeline(_spec(tmp_path, output=str(tmp_path / "bad"), jobs=2,
                           launch_args=["--num-gpus", "2"]))


def test_jobs_after_a_failure_finish_what_runs_and_start_nothing_new(tmp_path, fake):
    fake.fail_on, fake.seconds = "soco_seed0", 0.5
    spec = _spec(tmp_path, inits=["soco", "scratch"], seeds=[0, 1], jobs=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pipeline(spec)
    runner = StageRunner(spec.output)
    # scratch_seed0 ran beside the failed one: finished and evaluated; seed 1 never started
    assert runner.done("evaluate/scratch_seed0") and not runner.done("finetune/soco_seed0")
    assert not any("seed1" in s for s in _started(runner))
    n_events = len(runner.history())
    fake.seconds = 0.0
    run_pipeline(spec)
    assert sorted(_started(runner, n_events)) == sorted(
        f"{stage}/{run}" for run in ("soco_seed0", "soco_seed1", "scratch_seed1")
        for stage in ("finetune", "evaluate")
    )


def test_parse_init():
    assert parse_init("soco") == ("soco", None)
    assert parse_init("moco=/w/m.pth") == ("moco", "/w/m.pth")
    for bad in ("=x.pth", "a/b=x.pth", "a b", "moco="):
        with pytest.raises(ValueError):
            parse_init(bad)


def test_launch_flags_reach_every_training(tmp_path, fake):
    launch = ["--num-gpus", "2", "--num-machines", "1", "--machine-rank", "0", "--dist-url", "auto"]
    run_pipeline(_spec(tmp_path, inits=["soco", "scratch"], launch_args=launch))
    assert [c[0] for c in fake.calls] == ["soco", "soco_seed0", "scratch_seed0"]
    assert all(c[2] == launch for c in fake.calls)
    seen = {}
    fake_cmd = lambda cmd, log, threads=2: seen.update(cmd=cmd)  # noqa: E731
    stages_mod.run_command, saved = fake_cmd, stages_mod.run_command
    try:
        stages_mod.run_training("a.yaml", "o", ["SEED", "3"], str(tmp_path / "l.log"),
                                launch_args=launch)
    finally:
        stages_mod.run_command = saved
    cmd = seen["cmd"]
    # the installed module, not a file of the checkout
    assert cmd[1:3] == ["-m", "soco_d2.tools.train_net"] and cmd[3] == "--resume"
    assert cmd[4:12] == launch and cmd[cmd.index("--config-file") + 1] == "a.yaml"
    assert cmd[cmd.index("OUTPUT_DIR") + 1] == "o" and cmd[-2:] == ["SEED", "3"]


def test_transfer_groups_and_detector_check(tmp_path, fake, monkeypatch):
    spec = _spec(tmp_path, inits=["soco"], transfer=["backbone", "fpn"])
    run_pipeline(spec)
    with open(tmp_path / "out/pretrain/soco/model_converted.pkl", "rb") as f:
        keys = set(pickle.load(f)["model"])
    assert keys == {"backbone.bottom_up.stem.conv1.weight", "backbone.fpn_lateral2.weight"}
    info = StageRunner(spec.output).info("convert/soco")
    assert info["arch"] == "fpn" and info["loaded"] == {"backbone": 1, "fpn": 1, "box_head": 0}
    # the same output asked for other groups: a clear error, not a silent reuse
    spec.transfer = ["backbone", "fpn", "box_head"]
    with pytest.raises(ValueError, match="converted the groups"):
        run_pipeline(spec)
    # weights that match nothing the detector has: an error before any fine-tune, no file
    monkeypatch.setattr(run_mod, "detector_state", lambda c, o: {"other.weight": torch.zeros(1)})
    spec.output = str(tmp_path / "mismatch")
    fake.calls.clear()
    with pytest.raises(DetectorMismatchError, match="matches nothing"):
        run_pipeline(spec)
    assert [c[0] for c in fake.calls] == ["soco"]
    assert not (tmp_path / "mismatch/pretrain/soco/model_converted.pkl").exists()
    # an unknown group fails before the pretraining, not after it
    spec.output, spec.transfer = str(tmp_path / "other"), ["backbone", "neck"]
    fake.calls.clear()
    with pytest.raises(ValueError, match="subset of"):
        run_pipeline(spec)
    assert fake.calls == []


def test_selective_search_only_for_methods_with_proposals(tmp_path, fake, monkeypatch):
    no_prop = tmp_path / "multi_view.yaml"
    no_prop.write_text(f'_BASE_: "{PRE}"\nINPUT:\n  DATASET_MAPPER_NAME: "multi_view"\n')
    images = tmp_path / "images"
    images.mkdir()
    searched = []

    def search(s, p, logs):
        searched.append(p)
        _write_cache(p[1], [])
        return {"reused": False}

    monkeypatch.setattr(run_mod, "_selective_search", search)
    spec = _spec(tmp_path, pretrains={"mv": str(no_prop)}, inits=["mv"], unlabeled=str(images))
    run_pipeline(spec)
    assert searched == []
    mv = fake.opts(0)
    assert mv["DATASETS.TRAIN"] == "('pipeline_unlabeled',)"
    assert mv["DATASETS.SSL.REGISTER"] == repr((f"pipeline_unlabeled=folder:{images}",))

    spec.pretrains["soco"], spec.inits = PRE, ["mv", "soco"]
    run_pipeline(spec)
    cache = str(tmp_path / "out/proposals/unlabeled.bin")
    assert searched == [(str(images), cache)]
    soco = fake.opts(-2)  # pretrain/soco, then its fine-tune
    assert soco["DATASETS.SSL.REGISTER"] == repr((f"pipeline_unlabeled=folder:{images}:{cache}",))
    assert soco["DATASETS.SSL.PROPOSAL_CACHES"] == "()"


def _write_cache(path, keys, min_side=12.0):
    from soco_d2.data.proposals import write_cache

    box = {"boxes": np.array([[0, 0, 8, 8], [2, 2, 9, 9]]), "width": 16, "height": 16,
           "rule": "ratio3size0104"}
    filt = {"min_side": min_side, "max_ratio": 3.0, "min_scale": 0.1, "max_scale": 0.4,
            "fallback": True}
    write_cache(path, {k: box for k in keys},
                {"mode": "dual", "max_size": 160, "filter": filt, "source": "somewhere"})


def test_proposal_cache_is_checked_and_named_in_results(tmp_path, fake, monkeypatch):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), np.zeros((16, 16, 3), np.uint8))
    cache = str(tmp_path / "crowns.bin")
    _write_cache(cache, ["a.png", "b.png"])
    spec = _spec(tmp_path, inits=["soco"], unlabeled=str(images), proposals=(str(images), cache))
    run_pipeline(spec)
    md = (tmp_path / "out/results.md").read_text()
    # a cache made before the run states the filter it was made with, not the default one
    assert (f"Proposals of `soco`: `{cache}` (an existing cache, reused as it is; selective "
            "search (`dual`, images at most 160 px), boxes with sides >= 12 px, aspect ratio "
            "<= 3, sqrt(area) 0.1-0.4 of the image's); 4 boxes, 2 of the 2 pool images "
            "covered.") in md

    # a cache of another folder fails before any pretraining, and leaves no marker
    other = str(tmp_path / "other.bin")
    _write_cache(other, ["x.png"])
    spec2 = _spec(tmp_path, output=str(tmp_path / "out2"), inits=["soco"],
                  unlabeled=str(images), proposals=(str(images), other))
    fake.calls.clear()
    with pytest.raises(ValueError, match="holds none of the 2 images"):
        run_pipeline(spec2)
    assert fake.calls == [] and not StageRunner(spec2.output).done("proposals")

    # a partial cache is named as such, with its own filter
    _write_cache(other, ["b.png"], min_side=32.0)
    run_pipeline(spec2)
    md = (tmp_path / "out2/results.md").read_text()
    assert "sides >= 32 px" in md
    assert "2 boxes, 1 of the 2 pool images covered; the others are skipped" in md

    # a cache deleted after its stage is searched again
    os.remove(cache)
    searched = []

    def search(s, p, logs):
        searched.append(p)
        _write_cache(p[1], ["a.png", "b.png"])
        return {"reused": False}

    monkeypatch.setattr(run_mod, "_selective_search", search)
    run_pipeline(spec)
    assert searched == [(str(images), cache)]
    assert "(made by this run; " in (tmp_path / "out/results.md").read_text()


def test_pretrain_seconds_count_failed_attempts(tmp_path):
    runner = StageRunner(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        runner.run("pretrain/a", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    events = runner.history()
    events[-1]["seconds"] = 100.0  # as if the killed attempt had run 100 s
    with open(runner.log_path, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)
    runner.run("pretrain/a", lambda: {})
    last = runner.info("pretrain/a")["seconds"]
    assert runner.seconds("pretrain/a") == pytest.approx(100.0 + last)
    assert runner.seconds("pretrain/b") is None


@pytest.mark.spawns
def test_failed_command_reports_log_tail(tmp_path):
    import sys

    with pytest.raises(RuntimeError, match="boom-42"):
        stages_mod.run_command(
            [sys.executable, "-c", "import sys; print('boom-42', file=sys.stderr); sys.exit(3)"],
            str(tmp_path / "x.log"),
        )


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its reaper is stopped too
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def _assert_gone(*pids, within: float = 15.0):
    """Waits up to ``within`` seconds for every process of ``pids`` to end; asserts they did."""
    deadline = time.time() + within
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)]


@pytest.mark.spawns
def test_a_terminated_pipeline_stops_its_command_and_the_commands_children(tmp_path):
    """SIGTERM to the pipeline while a stage's command runs: the command and what it started
    (a launcher's workers) are stopped, not left training on into the output directory."""
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    # the "training": a shell that starts a worker, records both pids and waits
    cmd = ["bash", "-c", f"sleep 300 & echo $$ $! > {pids}; wait"]
    driver = (
        "import sys; from soco_d2.pipeline import stages\n"
        "stages.exit_on_sigterm()\n"
        f"stages.run_command({cmd!r}, {str(tmp_path / 'x.log')!r})\n"
    )
    pipeline = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO_ROOT)
    deadline = time.time() + 60
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert time.time() < deadline and pipeline.poll() is None, "the command never started"
        time.sleep(0.1)
    shell, worker = (int(p) for p in pids.read_text().split())
    pipeline.send_signal(signal.SIGTERM)
    assert pipeline.wait(timeout=30) == 128 + signal.SIGTERM

    _assert_gone(shell, worker)


@pytest.mark.spawns
def test_a_terminated_pipeline_stops_every_job_it_runs(tmp_path):
    """With jobs side by side, SIGTERM reaches the main thread only: every job's command (and
    its children) is stopped all the same, and the pipeline exits promptly."""
    import signal
    import subprocess
    import sys

    cmds = [["bash", "-c", f"sleep 300 & echo $$ $! > {tmp_path / f'pids{i}'}; wait"]
            for i in range(2)]
    driver = (
        "from soco_d2.pipeline import stages, run\n"
        "stages.exit_on_sigterm()\n"
        f"cmds = {cmds!r}\n"
        f"units = [lambda c=c, i=i: stages.run_command(c, {str(tmp_path)!r} + f'/x{{i}}.log')"
        " for i, c in enumerate(cmds)]\n"
        "run.run_units(units, jobs=2)\n"
    )
    pipeline = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO_ROOT)
    files = [tmp_path / f"pids{i}" for i in range(2)]
    deadline = time.time() + 60
    while not all(f.exists() and len(f.read_text().split()) == 2 for f in files):
        assert time.time() < deadline and pipeline.poll() is None, "the commands never started"
        time.sleep(0.1)
    pids = [int(p) for f in files for p in f.read_text().split()]
    pipeline.send_signal(signal.SIGTERM)
    assert pipeline.wait(timeout=30) == 128 + signal.SIGTERM

    _assert_gone(*pids)


def _start_recorded_command(tmp_path, logs):
    """A pipeline process running one command (a shell and the worker it started) through
    run_command, its log in ``logs``; returns the pipeline, the shell's and the worker's pids."""
    import subprocess
    import sys

    pids = tmp_path / "pids"
    cmd = ["bash", "-c", f"sleep 300 & echo $$ $! > {pids}; wait"]
    driver = (
        "from soco_d2.pipeline import stages\n"
        f"stages.run_command({cmd!r}, {str(logs / 'x.log')!r})\n"
    )
    pipeline = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO_ROOT)
    record = logs / "x.log.running"
    deadline = time.time() + 60
    while not (record.exists() and pids.exists() and len(pids.read_text().split()) == 2):
        assert time.time() < deadline and pipeline.poll() is None, "the command never started"
        time.sleep(0.1)
    shell, worker = (int(p) for p in pids.read_text().split())
    return pipeline, shell, worker


@pytest.mark.spawns
def test_a_rerun_stops_what_a_sigkilled_pipeline_left_training(tmp_path, fake, capsys):
    """SIGKILL cannot be forwarded: the command and its worker train on, orphaned. The next
    pipeline in that output directory stops them (from the record run_command left) before it
    runs any stage, so the two do not write the same checkpoints."""
    logs = tmp_path / "out" / "logs"
    pipeline, shell, worker = _start_recorded_command(tmp_path, logs)
    pipeline.kill()
    pipeline.wait(timeout=30)
    time.sleep(0.5)
    assert _alive(shell) and _alive(worker)  # what the record is for
    run_pipeline(_spec(tmp_path, inits=["scratch"]))
    assert not _alive(shell) and not _alive(worker)
    out = capsys.readouterr().out
    assert "[pipeline] stopped bash -c sleep 300" in out and f"(process group {shell})" in out
    assert not (logs / "x.log.running").exists()
    assert stages_mod.stop_orphans(str(logs)) == []  # nothing left to stop


@pytest.mark.spawns
def test_a_command_that_watches_its_parent_ends_with_a_sigkilled_pipeline(tmp_path):
    """tools/train_net.py and tools/selective_search.py call stop_with_parent: when the
    pipeline is SIGKILLed they stop their process group themselves, workers included, without
    waiting for a rerun; the workers do not inherit the watch."""
    import subprocess
    import sys

    pids, env_seen = tmp_path / "pids", tmp_path / "env_seen"
    worker = ("import os, time; "
              f"open({str(env_seen)!r}, 'w').write(os.environ.get('SOCO_D2_STOP_WITH_PARENT', '-')); "
              "time.sleep(300)")
    command = (
        "import os, subprocess, sys, time\n"
        "from soco_d2.utils.parent import stop_with_parent\n"
        "assert stop_with_parent(poll_s=0.1) is not None\n"
        f"w = subprocess.Popen([sys.executable, '-c', {worker!r}])\n"
        f"open({str(pids)!r} + '.tmp', 'w').write(f'{{os.getpid()}} {{w.pid}}')\n"
        f"os.replace({str(pids)!r} + '.tmp', {str(pids)!r})\n"
        "time.sleep(300)\n"
    )
    driver = (
        "import sys\nfrom soco_d2.pipeline import stages\n"
        f"stages.run_command([sys.executable, '-c', {command!r}], {str(tmp_path / 'x.log')!r})\n"
    )
    pipeline = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO_ROOT)
    deadline = time.time() + 60
    while not (pids.exists() and env_seen.exists()):
        assert time.time() < deadline and pipeline.poll() is None, (tmp_path / "x.log").read_text()
        time.sleep(0.1)
    command_pid, worker_pid = (int(p) for p in pids.read_text().split())
    assert env_seen.read_text() == "-"
    pipeline.kill()
    pipeline.wait(timeout=30)
    _assert_gone(command_pid, worker_pid)


@pytest.mark.spawns
def test_a_record_of_a_running_pipeline_is_an_error_not_a_kill(tmp_path):
    import signal

    logs = tmp_path / "logs"
    pipeline, shell, worker = _start_recorded_command(tmp_path, logs)
    try:
        with pytest.raises(RuntimeError, match=f"another pipeline \\(pid {pipeline.pid}\\)"):
            stages_mod.stop_orphans(str(logs))
        assert _alive(shell) and _alive(worker)
    finally:
        pipeline.send_signal(signal.SIGINT)  # run_command stops its group on KeyboardInterrupt
        pipeline.wait(timeout=30)
    _assert_gone(shell, worker)
    assert not (logs / "x.log.running").exists()


@pytest.mark.spawns
def test_stale_records_stop_nothing(tmp_path):
    """A command lock nobody holds (its command ended, whatever pid it names, even one now
    used by another live process, or an unreadable one) is removed without a signal sent; a
    finished command leaves no lock file."""
    import subprocess
    import sys

    logs = tmp_path / "logs"
    stages_mod.run_command([sys.executable, "-c", "print(1)"], str(logs / "done.log"))
    assert not (logs / "done.log.running").exists()

    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (logs / "reused.log.running").write_text(json.dumps({"pid": other.pid, "cmd": ["x"]}))
        (logs / "broken.log.running").write_text("{")
        assert stages_mod.stop_orphans(str(logs)) == []
        assert _alive(other.pid)
        assert not [p.name for p in logs.iterdir() if p.name.endswith(".running")]
    finally:
        other.kill()
        other.wait()


@pytest.mark.spawns
def test_a_second_pipeline_in_one_output_directory_is_refused(tmp_path, fake):
    """run_pipeline holds the output lock for its lifetime: another process running a pipeline
    into the same output directory is refused before any stage, naming the first."""
    import subprocess
    import sys

    logs = tmp_path / "out" / "logs"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom soco_d2.pipeline import processes\n"
        f"processes.claim_output({str(logs)!r})\nprint('held', flush=True)\ntime.sleep(300)\n"
    )], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"another pipeline \\(pid {holder.pid}\\)"):
            run_pipeline(_spec(tmp_path, inits=["scratch"]))
        assert fake.calls == []
    finally:
        holder.kill()
        holder.wait()
    run_pipeline(_spec(tmp_path, inits=["scratch"]))  # its lock went with it
    assert fake.calls


def test_a_detectron2_weights_file_is_used_as_is_and_read_safely(tmp_path):
    import pickle

    import numpy as np

    from soco_d2.pipeline.run import _check_checkpoints
    from soco_d2.pipeline.spec import Init

    def inits(**paths):
        return [Init(name, "checkpoint", path, FT) for name, path in paths.items()]

    d2 = tmp_path / "d2.pkl"
    d2.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "__author__": "x"}))
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"state_dict": {"w": np.zeros(2)}}))
    assert _check_checkpoints(inits(d2=str(d2), plain=str(plain)), trust_pickle=False) == {"d2"}
    # trusted: neither is read (the tar does not exist, the URL is not downloaded)
    zoo = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    tar = str(tmp_path / "moco.pth.tar")
    assert _check_checkpoints(inits(moco=tar, zoo=zoo), trust_pickle=True) == {"zoo"}
