"""Shipped configs: found from a checkout, and packed into a wheel where an install finds them."""
import glob
import importlib.util
import os
import zipfile

import pytest

from soco_d2.model_zoo import config_dirs, get_config_file
from _wheel import build_wheel

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_get_config_file_finds_a_shipped_config():
    path = get_config_file("pretrain/soco_R50_FPN_100ep.yaml")
    assert path == os.path.join(REPO, "configs", "pretrain", "soco_R50_FPN_100ep.yaml")
    assert os.path.isfile(path)
    with pytest.raises(FileNotFoundError, match="nope/missing.yaml.*searched: .*configs"):
        get_config_file("nope/missing.yaml")
    assert config_dirs()[0] == os.path.join(REPO, "configs")


def _requires(metadata: str):
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Requires-Dist:")]


@pytest.mark.spawns
def test_wheel_ships_configs_and_no_torch_or_detectron2(tmp_path):
    wheel = build_wheel(str(tmp_path))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = _requires(z.read(meta_name).decode())
        z.extractall(tmp_path / "site")
    shipped = sorted(n for n in names if n.startswith("soco_d2/model_zoo/configs/pretrain/"))
    expected = sorted(
        "soco_d2/model_zoo/configs/pretrain/" + os.path.basename(p)
        for p in glob.glob(os.path.join(REPO, "configs", "pretrain", "*.yaml"))
    )
    assert shipped == expected and expected
    assert "soco_d2/data/datasets/voc_evaluation.py" in names
    lowered = [r.lower() for r in requires]
    assert any(r.startswith("pycocotools") for r in lowered)
    assert not [r for r in lowered if r.startswith(("torch", "detectron2"))], requires

    # The installed copy (no setup.py beside it) finds its packed configs.
    spec = importlib.util.spec_from_file_location(
        "installed_model_zoo", tmp_path / "site" / "soco_d2" / "model_zoo" / "__init__.py"
    )
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    path = installed.get_config_file("pretrain/soco_R50_FPN_100ep.yaml")
    assert path == str(tmp_path / "site" / "soco_d2" / "model_zoo" / "configs" / "pretrain"
                       / "soco_R50_FPN_100ep.yaml")
