"""The wheel, installed outside the checkout, runs everything from a folder of its own: its
console entry points and ``python -m soco_d2.tools.*`` exist, and a tiny pipeline (proposals,
one pretraining, conversion, one fine-tune, evaluation) runs through ``soco-d2-pipeline`` with
every training and search started from the installed modules and configs."""
import json
import os
import subprocess
import sys

import pytest

from soco_d2.data.demo import generate_demo_dataset
from _configs import PIPELINE_FINETUNE_OPTS, PIPELINE_PRETRAIN_OPTS
from _paths import REPO_ROOT
from _wheel import build_wheel

pytestmark = pytest.mark.spawns

ENTRY_POINTS = ["soco-d2-train", "soco-d2-pipeline", "soco-d2-convert", "soco-d2-proposals"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(target folder, environment)``: the wheel installed with ``pip --target`` (no deps:
    the test environment has them), first on ``PYTHONPATH``, run from an empty folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(str(tmp))
    target = str(tmp / "site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel],
        check=True, capture_output=True, timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=target, OMP_NUM_THREADS="1")
    return target, env


@pytest.mark.timeout(600)
def test_installed_wheel_runs_a_tiny_pipeline_from_its_own_folder(installed, tmp_path):
    target, env = installed
    work = tmp_path / "work"
    work.mkdir()
    env = dict(env, DETECTRON2_DATASETS=str(work / "ds"))

    def run(cmd, timeout=120):
        proc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-4000:]
        return proc.stdout

    where = run([sys.executable, "-c", "import soco_d2; print(soco_d2.__file__)"]).strip()
    assert where.startswith(target) and not where.startswith(REPO_ROOT), where
    for name in ENTRY_POINTS:
        assert os.access(os.path.join(target, "bin", name), os.X_OK), name
    usage = run([sys.executable, "-m", "soco_d2.tools.convert_pretrained", "--help"])
    assert "--trust-pickle" in usage
    assert "Warning" not in usage, usage  # no dependency's warnings on start

    demo = work / "ds" / "demo"
    generate_demo_dataset(str(demo), num_unlabeled=6, num_train=4, num_val=2, image_size=64)
    ann = demo / "annotations"
    run([
        os.path.join(target, "bin", "soco-d2-pipeline"), "--output", "out",
        # shipped configs, named as in the repository, found inside the installed package
        "--pretrain", "soco=configs/demo/soco_R18_FPN_demo.yaml",
        "--finetune-config", "configs/demo/mask_rcnn_R18_FPN_demo.yaml",
        "--inits", "soco", "--seeds", "1", "--unlabeled", str(demo / "unlabeled"),
        "--train", f"coco:{ann / 'instances_train.json'}:{demo / 'train'}",
        "--test", f"coco:{ann / 'instances_val.json'}:{demo / 'val'}",
        "--threads", "1", "--no-plots",
        "--pretrain-opts", *PIPELINE_PRETRAIN_OPTS, "--finetune-opts", *PIPELINE_FINETUNE_OPTS,
    ], timeout=540)

    out = work / "out"
    done = sorted(p.name for p in (out / ".done").iterdir())
    assert {"proposals.json", "pretrain__soco.json", "convert__soco.json",
            "finetune__soco_seed0.json", "evaluate__soco_seed0.json"} <= set(done), done
    assert (out / "pretrain" / "soco" / "model_converted.pkl").is_file()
    results = json.loads((out / "results.json").read_text())
    assert "bbox" in results["soco"]["seed0"]
    # every training and the search ran from the installed package, not from the checkout
    for log in ("pretrain_soco.log", "finetune_soco_seed0.log"):
        text = (out / "logs" / log).read_text()
        assert REPO_ROOT + os.sep + "soco_d2" not in text, log
    config = (out / "pretrain" / "soco" / "config.yaml").read_text()
    assert REPO_ROOT not in config
