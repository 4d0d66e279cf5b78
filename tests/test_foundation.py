import subprocess
import sys

import pytest
from detectron2.config import get_cfg

import soco_d2
from soco_d2.collect_env import collect_env, detectron2_compiled_ops


def test_add_ssl_config_is_idempotent_and_complete():
    cfg = get_cfg()
    soco_d2.add_ssl_config(cfg)
    cfg.MODEL.SSL.MOMENTUM = 0.5
    soco_d2.add_ssl_config(cfg)  # second call must not reset or fail
    assert cfg.MODEL.SSL.MOMENTUM == 0.5
    assert list(cfg.MODEL.SOCO.LEVEL_RANGES) == [48, 96, 192]
    assert cfg.SOLVER.OPTIMIZER == "SGD"


def test_collect_env_reports_compiled_ops():
    text = collect_env(short=True)
    assert "detectron2 compiled ops (_C): " + ("present" if detectron2_compiled_ops() else "absent") in text
    if not detectron2_compiled_ops():
        assert "pycocotools' COCOeval" in text


@pytest.mark.spawns
def test_collect_env_cli():
    out = subprocess.run([sys.executable, "-m", "soco_d2.collect_env", "--short"],
                         capture_output=True, text=True, check=True).stdout
    assert "detectron2:" in out and "torch:" in out
