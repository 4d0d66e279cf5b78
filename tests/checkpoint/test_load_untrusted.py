"""Hostile checkpoints (a pickle that calls os.system or writes a file on load) are refused with
an error naming what was refused and --trust-pickle, and nothing in them runs: through
read_checkpoint and through tools/convert_pretrained.py. With the flag, a file that needs it
loads."""
import pytest
import torch

from soco_d2.checkpoint import UntrustedCheckpointError, load_state_dict, read_checkpoint

from _fixtures import load_cli
from _hostile_checkpoints import (
    SUFFIXES,
    Note,
    assert_nothing_ran,
    payloads,
    write_checkpoint,
)

# what each payload names: os.system pickles under its platform module (posix.system)
REFUSED = {"os_system": ".system", "function": "_hostile_checkpoints.write_marker"}

# a bare ViT encoder (layout "mae"): converts without building a detector
VIT = {
    "patch_embed.proj.weight": torch.randn(8, 3, 4, 4),
    "patch_embed.proj.bias": torch.randn(8),
    "pos_embed": torch.randn(1, 5, 8),
    "blocks.0.norm1.weight": torch.randn(8),
}


@pytest.fixture(scope="module")
def cli():
    return load_cli()


@pytest.mark.parametrize("payload", sorted(REFUSED))
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_hostile_file_is_refused_and_runs_nothing(tmp_path, suffix, payload):
    marker = str(tmp_path / "MARKER")
    path = write_checkpoint(tmp_path / f"evil{suffix}", payloads(marker)[payload])
    with pytest.raises(UntrustedCheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused global ")
    assert REFUSED[payload] in info.value.refused
    assert "may be unsafe" in message and "--trust-pickle" in message
    with pytest.raises(UntrustedCheckpointError):
        load_state_dict(path)
    assert_nothing_ran(marker)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_converter_refuses_hostile_file_in_one_line(tmp_path, cli, capsys, suffix):
    marker = str(tmp_path / "MARKER")
    path = write_checkpoint(tmp_path / f"evil{suffix}", payloads(marker)["os_system"], VIT)
    out = tmp_path / "out.pkl"
    assert cli.main([path, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: refused global ")
    assert ".system" in err and "may be unsafe" in err and "--trust-pickle" in err
    assert not out.exists()
    assert_nothing_ran(marker)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_trust_pickle_loads_a_file_that_needs_it(tmp_path, cli, capsys, suffix):
    path = write_checkpoint(tmp_path / f"noted{suffix}", Note("trained on my data"), VIT)
    with pytest.raises(UntrustedCheckpointError, match="_hostile_checkpoints.Note"):
        read_checkpoint(path)
    assert read_checkpoint(path, trust_pickle=True)["extra"].text == "trained on my data"
    assert set(load_state_dict(path, trust_pickle=True)) == set(VIT)

    out = tmp_path / "out.pkl"
    assert cli.main([path, str(out)]) == 2 and "--trust-pickle" in capsys.readouterr().err
    assert cli.main([path, str(out), "--trust-pickle"]) == 0
    assert "layout: mae" in capsys.readouterr().out
    # what the converter wrote needs no flag
    model = read_checkpoint(str(out))["model"]
    assert torch.equal(torch.as_tensor(model["backbone.net.pos_embed"]), VIT["pos_embed"])


def test_trust_pickle_really_is_unrestricted(tmp_path):
    """The flag is the one way in: with it, the payload of a hostile file does run."""
    marker = tmp_path / "MARKER"
    path = write_checkpoint(tmp_path / "evil.pth", payloads(str(marker))["function"])
    read_checkpoint(path, trust_pickle=True)
    assert marker.exists()
