"""The table of layouts: registration, names, exact detection, per-layout architectures."""
import pytest
import torch

import soco_d2.checkpoint as ckpt
from soco_d2.checkpoint import (
    Layout,
    UnknownLayoutError,
    convert_state_dict,
    detect_layout,
    detector_group,
    get_layout,
    layout_names,
    register_layout,
)
from soco_d2.checkpoint.layouts import base


@pytest.fixture
def toy_layout():
    """A layout registered for one test only (the table is process-wide)."""

    class ToyLayout(Layout):
        name = "toy_test_only"
        groups = ("backbone",)
        archs = ("toy",)

        def detect(self, keys):
            return "toy.stem" in keys

        def infer_arch(self, keys):
            return "toy"

        def map_key(self, key, arch):
            return ("backbone", "backbone.net." + key[len("toy.") :]) if arch == "toy" else None

    register_layout(ToyLayout)
    try:
        yield ToyLayout
    finally:
        base._REGISTRY.pop("toy_test_only")


def test_builtin_names_and_alias():
    # this package's ResNet layouts (other families add their own modules)
    resnet = {"densecl_official", "moco_official", "soco_d2", "soco_official", "torchvision"}
    assert resnet <= set(layout_names(with_aliases=False))
    assert "moco" in layout_names() and get_layout("moco") is get_layout("moco_official")
    assert [lay.name for lay in ckpt.LAYOUTS] == layout_names(with_aliases=False)
    with pytest.raises(UnknownLayoutError, match="unknown layout 'mocov3'.*moco_official"):
        get_layout("mocov3")


def test_a_new_layout_is_one_registered_class(toy_layout):
    assert "toy_test_only" in [lay.name for lay in ckpt.LAYOUTS]
    state = {"toy.stem": torch.ones(2), "toy.head": torch.zeros(1)}
    result = convert_state_dict(state)
    assert result.layout == "toy_test_only" and result.arch == "toy"
    assert set(result.model) == {"backbone.net.stem", "backbone.net.head"}
    with pytest.raises(ValueError, match="one of \\('toy',\\) for layout toy_test_only"):
        convert_state_dict(state, arch="fpn")
    with pytest.raises(ValueError, match="already registered"):
        register_layout(toy_layout)


def test_two_accepting_layouts_are_refused(toy_layout):
    # a state dict with both a torchvision ResNet and the toy marker: no silent first match
    keys = ["conv1.weight", "layer1.0.conv1.weight", "toy.stem"]
    with pytest.raises(UnknownLayoutError, match="ambiguous.*'torchvision', 'toy_test_only'"):
        detect_layout(keys)


def test_bad_layout_class_is_refused():
    class NoGroups(Layout):
        name = "no_groups_test_only"
        groups = ("neck",)

    with pytest.raises(ValueError, match="groups within"):
        register_layout(NoGroups)
    assert "no_groups_test_only" not in layout_names()


def test_detector_groups():
    assert detector_group("backbone.bottom_up.res2.0.conv1.weight") == "backbone"
    assert detector_group("backbone.res4.5.conv3.norm.bias") == "backbone"
    assert detector_group("roi_heads.res5.2.conv1.weight") == "backbone"
    assert detector_group("roi_heads.res5.norm.weight") is None  # fine-tuning's extra norm
    assert detector_group("backbone.net.blocks.0.attn.qkv.weight") == "backbone"
    assert detector_group("backbone.fpn_output3.norm.weight") == "fpn"
    assert detector_group("backbone.simfp_2.0.weight") == "fpn"
    assert detector_group("roi_heads.box_head.fc1.weight") == "box_head"
    assert detector_group("proposal_generator.rpn_head.conv.weight") is None
