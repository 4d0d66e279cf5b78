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


@pytest.mark.parametrize(
    "old,new",
    [("MODEL.SOCO.MOMENTUM", "MODEL.SSL.MOMENTUM"),
     ("INPUT.SOCO.VIEW_SIZES", "INPUT.SSL.VIEW_SIZES"),
     ("MODEL.SOCO.POOLER_RESOLUTION", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"),
     ("DATASETS.SOCO.REGISTER", "DATASETS.SSL.REGISTER")],
)
def test_a_moved_key_names_its_new_place(tmp_path, old, new):
    cfg = soco_d2.config.get_ssl_cfg()
    with pytest.raises(KeyError, match=new.replace(".", r"\.")):
        cfg.merge_from_list([old, "1"])
    # the same from a YAML file, the way a user's old config meets it
    parts = old.split(".")
    text = "".join("  " * i + p + ":\n" for i, p in enumerate(parts[:-1]))
    text += "  " * (len(parts) - 1) + parts[-1] + ": 1\n"
    (tmp_path / "old.yaml").write_text(text)
    # a whole moved node (DATASETS.SOCO) is named by its new node (DATASETS.SSL)
    with pytest.raises(KeyError, match=".".join(new.split(".")[:2]).replace(".", r"\.")):
        soco_d2.config.get_ssl_cfg().merge_from_file(str(tmp_path / "old.yaml"))


def test_collect_env_reports_compiled_ops():
    text = collect_env(short=True)
    assert "detectron2 compiled ops (_C): " + ("present" if detectron2_compiled_ops() else "absent") in text
    if not detectron2_compiled_ops():
        assert "pycocotools' COCOeval" in text


def test_collect_env_cli():
    out = subprocess.run([sys.executable, "-m", "soco_d2.collect_env", "--short"],
                         capture_output=True, text=True, check=True).stdout
    assert "detectron2:" in out and "torch:" in out
