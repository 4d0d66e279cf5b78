"""tools/sim_spectrum.py: a SIM checkpoint's token spectra from the config's training images."""
import json
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from soco_d2.engine import load_cfg
from _configs import folder_dataset_opts
from _data import write_random_images
from _paths import REPO_ROOT

ROOT = Path(REPO_ROOT)
TINY = str(ROOT / "configs/pretrain/sim_vit_tiny.yaml")


@pytest.fixture(scope="module")
def tool(load_script):
    return load_script("tools/sim_spectrum.py")


def test_spectra_of_random_init_and_of_a_collapsed_checkpoint(tool, tmp_path, capsys):
    write_random_images(tmp_path, height=40, width=48, names=[f"{i}.png" for i in range(4)])
    opts = folder_dataset_opts("spectrum_imgs", tmp_path)
    # a checkpoint whose target embeds every token as the same vector (zero weight, random
    # bias; the projector blocks keep equal tokens equal): a fully collapsed target
    cfg = load_cfg(TINY, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    embed = model.target["decoder_embed"]
    with torch.no_grad():
        embed.weight.zero_()
        embed.bias.copy_(torch.randn_like(embed.bias))
    ckpt = str(tmp_path / "collapsed.pth")
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("collapsed")
    tool.main(["--config-file", TINY, "--weights", "", "--weights", ckpt, "--images", "3", *opts])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["weights"] for r in rows] == ["random init", ckpt]
    assert rows[1]["target"]["top1"] == pytest.approx(1.0) and rows[1]["target"]["erank"] < 1.01
    assert rows[0]["target"]["erank"] > 1.5
    assert rows[0]["encoder"] == rows[1]["encoder"]  # the online encoder was left alone
    det = str(ROOT / "configs/demo/mask_rcnn_R18_FPN_demo.yaml")
    with pytest.raises(ValueError, match="not SIM"):
        tool.spectra(load_cfg(det, register=False), [""], [])
