"""tools/sim_spectrum.py: a SIM checkpoint's token spectra from the config's training images."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from soco_d2.engine import load_cfg

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs/pretrain/sim_vit_tiny.yaml")


@pytest.fixture(scope="module")
def tool(load_script):
    return load_script("tools/sim_spectrum.py")


def test_spectra_of_random_init_and_of_a_collapsed_checkpoint(tool, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    opts = ["DATASETS.SSL.REGISTER", repr((f"spectrum_imgs=folder:{tmp_path}",)),
            "DATASETS.TRAIN", "('spectrum_imgs',)"]
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
