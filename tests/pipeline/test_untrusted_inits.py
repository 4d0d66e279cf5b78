"""tools/pipeline.py --inits NAME=CHECKPOINT with a hostile file: refused before any stage (no
output folder, no training, nothing from the file run), as a one-line error naming
--trust-pickle; with --trust-pickle a file that needs it is converted and fine-tuned from."""
import os
import subprocess
import sys

import pytest
import torch

from soco_d2.checkpoint import UntrustedCheckpointError, read_checkpoint
from soco_d2.pipeline import PipelineSpec, run_pipeline
from soco_d2.pipeline import run as run_mod
from _paths import REPO_ROOT

from _hostile_checkpoints import SUFFIXES, Note, assert_nothing_ran, payloads, write_checkpoint

FT = os.path.join(REPO_ROOT, "configs/demo/mask_rcnn_R18_FPN_demo.yaml")
# weights in this plugin's layout and the detector tensors they fit
SHAPES = {
    "backbone.bottom_up.stem.conv1.weight": (4, 3, 3, 3),
    "backbone.fpn_lateral2.weight": (4, 4, 1, 1),
    "roi_heads.box_head.fc1.weight": (8, 4),
}


@pytest.fixture
def fake(monkeypatch):
    """Trainings, evaluations and detector builds stand-ins; ``fake`` lists the trainings."""
    trainings = []

    def run_training(config, output_dir, opts, log_path, threads=2, launch_args=()):
        trainings.append(dict(zip(opts[::2], opts[1::2])))
        os.makedirs(output_dir, exist_ok=True)

    def evaluate(config, opts, weights, output_dir):
        return {"bbox": {m: 30.0 for m in ["AP", "AP50", "AP75", "APs", "APm", "APl"]}}

    monkeypatch.setattr(run_mod, "run_training", run_training)
    monkeypatch.setattr(run_mod, "evaluate", evaluate)
    monkeypatch.setattr(
        run_mod, "detector_state", lambda c, o: {k: torch.zeros(s) for k, s in SHAPES.items()}
    )
    return trainings


def _spec(tmp_path, init: str, **kw) -> PipelineSpec:
    return PipelineSpec(output=str(tmp_path / "out"), finetune_config=FT, inits=[init, "scratch"],
                        seeds=[0], plots=False, **kw)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_hostile_init_is_refused_before_any_stage(tmp_path, fake, suffix):
    marker = str(tmp_path / "MARKER")
    for payload in payloads(marker).values():
        path = write_checkpoint(tmp_path / f"evil{suffix}", payload)
        with pytest.raises(UntrustedCheckpointError, match="--trust-pickle"):
            run_pipeline(_spec(tmp_path, f"evil={path}"))
        assert not (tmp_path / "out").exists() and fake == []
        assert_nothing_ran(marker)


@pytest.mark.spawns
def test_pipeline_cli_refuses_in_one_line(tmp_path):
    marker = str(tmp_path / "MARKER")
    path = write_checkpoint(tmp_path / "evil.pth.tar", payloads(marker)["os_system"])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "pipeline.py"), "--output", str(out),
         "--finetune-config", FT, "--inits", f"evil={path},scratch", "--no-plots"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "ds"), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: refused global ") and ".system" in last
    assert "may be unsafe" in last and "--trust-pickle" in last
    assert not out.exists()
    assert_nothing_ran(marker)


def test_trust_pickle_converts_a_file_that_needs_it(tmp_path, fake):
    weights = {k: torch.randn(s) for k, s in SHAPES.items()}
    path = write_checkpoint(tmp_path / "mine.pth", Note("from my own run"), weights)
    with pytest.raises(UntrustedCheckpointError, match="_hostile_checkpoints.Note"):
        run_pipeline(_spec(tmp_path, f"mine={path}"))
    results = run_pipeline(_spec(tmp_path, f"mine={path}", trust_pickle=True))
    assert set(results) == {"mine", "scratch"}
    converted = str(tmp_path / "out" / "weights" / "mine.pkl")
    assert [t["MODEL.WEIGHTS"] for t in fake] == [converted, ""]
    model = read_checkpoint(converted)["model"]  # what the pipeline wrote needs no flag
    for key, value in weights.items():
        assert torch.equal(torch.as_tensor(model[key]), value)


def test_url_init_is_read_from_its_download_before_any_stage(tmp_path, fake, monkeypatch):
    """detectron2 unpickles a .pkl it downloads without restriction: the copy it will load is
    read here first."""
    from detectron2.utils.file_io import PathManager

    marker = str(tmp_path / "MARKER")
    local = write_checkpoint(tmp_path / "download.pkl", payloads(marker)["function"])
    url = "https://example.com/weights/model_final.pkl"
    monkeypatch.setattr(PathManager, "get_local_path", lambda p, **kw: local if p == url else p)
    with pytest.raises(UntrustedCheckpointError, match="download.pkl: refused global"):
        run_pipeline(_spec(tmp_path, f"zoo={url}"))
    assert not (tmp_path / "out").exists() and fake == []
    assert_nothing_ran(marker)
