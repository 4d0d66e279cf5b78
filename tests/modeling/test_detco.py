"""DetCo: level weights, cross terms, patch concatenation order, queues, floor, transfer keys."""
import math
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from soco_d2.config import get_ssl_cfg
from soco_d2.modeling.detco.heads import patches_to_images
from soco_d2.modeling.detco.losses import detco_level_terms, weight_level_losses
from _configs import tiny_detector_cfg
from _paths import CONFIGS

TINY = os.path.join(CONFIGS, "pretrain/detco_R18_tiny.yaml")


def _model(*opts):
    cfg = get_ssl_cfg()
    cfg.merge_from_file(TINY)
    cfg.merge_from_list(list(opts))
    torch.manual_seed(0)
    return build_model(cfg).train()


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)

    def img(*shape):
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)

    return [{"views": [img(3, 32, 32), img(3, 32, 32)],
             "jigsaw": [img(9, 3, 10, 10), img(9, 3, 10, 10)]} for _ in range(n)]


def _nce(pos, negs):
    """-log softmax of the positive, T = 1."""
    return -pos + math.log(math.exp(pos) + sum(math.exp(x) for x in negs))


def test_level_weights_multiply_the_sum_of_each_levels_terms():
    terms = {
        "res2": {"global": torch.tensor(1.0), "local": torch.tensor(2.0),
                 "global_to_local": torch.tensor(3.0), "local_to_global": torch.tensor(4.0)},
        "res5": {"global": torch.tensor(0.5), "local": torch.tensor(1.5)},
    }
    out = weight_level_losses(terms, {"res2": 0.1, "res5": 1.0})
    assert set(out) == {"loss_res2", "loss_res5"}
    assert out["loss_res2"].item() == pytest.approx(1.0)
    assert out["loss_res5"].item() == pytest.approx(2.0)


def test_cross_terms_pair_each_query_with_the_other_kinds_key_and_its_queue():
    q_g, q_l = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    k_g, k_l = torch.tensor([[0.6, 0.8]]), torch.tensor([[0.8, 0.6]])
    queue_g, queue_l = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.6], [0.8]])
    terms = detco_level_terms(q_g, k_g, queue_g, 1.0, q_l, k_l, queue_l)
    expected = {
        "global": _nce(0.6, [1.0]),           # q_g.k_g, q_g.queue_g
        "local": _nce(0.6, [0.8]),            # q_l.k_l, q_l.queue_l
        "global_to_local": _nce(0.8, [0.6]),  # q_g.k_l, negatives from the LOCAL queue
        "local_to_global": _nce(0.8, [0.0]),  # q_l.k_g, negatives from the GLOBAL queue
    }
    assert len(set(round(v, 6) for v in expected.values())) == 4  # the check can tell them apart
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-6), name
    one = detco_level_terms(q_g, k_g, queue_g, 1.0, q_l, k_l, queue_l, ["local_to_global"])
    assert set(one) == {"global", "local", "local_to_global"}
    assert set(detco_level_terms(q_g, k_g, queue_g, 1.0)) == {"global"}


def test_patches_concatenate_per_image_in_cell_order():
    n, cells, c = 2, 9, 3
    # Row k * N + n (cell-major) holds the value 10 * n + k in every channel.
    rows = [[10.0 * i + k] * c for k in range(cells) for i in range(n)]
    out = patches_to_images(torch.tensor(rows), n)
    assert out.shape == (n, cells * c)
    for i in range(n):
        assert out[i].tolist() == [10.0 * i + k for k in range(cells) for _ in range(c)]


def test_model_applies_level_weights_and_fills_all_eight_queues():
    model = _model("MODEL.MOCO.SHUFFLE_BN", "False")
    batch = _batch()
    with EventStorage() as storage:
        losses = model(batch)
        logged = {k: v[0] for k, v in storage.latest().items()}
    assert set(losses) == {"loss_res2", "loss_res3", "loss_res4", "loss_res5"}
    for lvl, w in zip(("res2", "res3", "res4", "res5"), (0.1, 0.4, 0.7, 1.0)):
        terms = ("global", "local", "global_to_local", "local_to_global")
        total = sum(logged[f"detco/{lvl}_{t}"] for t in terms)
        assert losses[f"loss_{lvl}"].item() == pytest.approx(w * total, rel=1e-5)
    assert len(model.queues) == 8
    # The enqueued keys are the target's embeddings of view 2 (global) and its patches (local).
    with torch.no_grad():
        k_g, k_l = model._embed(
            model.target, model.global_batch(batch, 1), model.patch_batch(batch, 1), False
        )
    for lvl in model.levels:
        for kind, keys in (("global", k_g), ("local", k_l)):
            q = model.queues[f"{lvl}_{kind}"]
            assert int(q.queue_ptr) == 4
            torch.testing.assert_close(q.queue[:, :4].t(), keys[lvl], rtol=1e-5, atol=1e-6)


def test_cross_directions_and_local_switch_change_the_terms():
    with EventStorage() as storage:
        _model("MODEL.DETCO.CROSS_DIRECTIONS", "[]")(_batch())
        assert {k.split("_", 1)[1] for k in storage.latest() if k.startswith("detco/res3")} == {
            "global", "local"}
    model = _model("MODEL.DETCO.LOCAL", "False")
    assert len(model.queues) == 4 and model.heads.local_heads is None
    with EventStorage() as storage:
        model([{"views": x["views"]} for x in _batch()])  # no jigsaw needed
        assert {k for k in storage.latest() if k.startswith("detco/res5")} == {"detco/res5_global"}


def test_floor_runs_both_backbones_on_views_and_patches():
    model = _model()
    seen = []
    for name, bb in (("online", model.backbone), ("target", model.target["backbone"])):
        bb.register_forward_hook(lambda m, i, o, name=name: seen.append((name, tuple(i[0].shape))))
    total = model.floor(_batch())
    assert sorted(seen) == sorted([("online", (4, 3, 32, 32)), ("online", (36, 3, 10, 10)),
                                   ("target", (4, 3, 32, 32)), ("target", (36, 3, 10, 10))])
    total.backward()
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.heads.parameters())


def test_backbone_keys_load_into_a_detector():
    detector = build_model(tiny_detector_cfg("fpn", 18))
    ours = _model().state_dict()
    wanted = {k: v for k, v in detector.state_dict().items() if k.startswith("backbone.bottom_up.")}
    assert wanted
    for key, value in wanted.items():
        twin = "backbone." + key[len("backbone.bottom_up."):]
        assert twin in ours, twin
        assert ours[twin].shape == value.shape, twin


@pytest.mark.parametrize("opts,match", [
    (["MODEL.DETCO.LEVEL_WEIGHTS", "[1.0]"], "LEVEL_WEIGHTS"),
    (["MODEL.DETCO.LEVELS", "['res2', 'p3']", "MODEL.DETCO.LEVEL_WEIGHTS", "[1.0, 1.0]",
      "MODEL.DETCO.GLOBAL_HIDDEN_DIMS", "[]", "MODEL.DETCO.LOCAL_HIDDEN_DIMS", "[]"], "p3"),
    (["MODEL.DETCO.CROSS_DIRECTIONS", "['both']"], "CROSS_DIRECTIONS"),
    (["MODEL.DETCO.GLOBAL_HIDDEN_DIMS", "[8]"], "GLOBAL_HIDDEN_DIMS"),
    (["MODEL.MOCO.QUEUE_SIZE", "18"], "QUEUE_SIZE"),
    (["MODEL.RESNETS.NORM", "SyncBN"], "SPLIT_BN"),
])
def test_bad_config_names_the_key(opts, match):
    with pytest.raises(ValueError, match=match):
        _model(*opts)


def test_inputs_without_jigsaw_name_the_mapper():
    with pytest.raises(ValueError, match="DATASET_MAPPER_NAME 'detco'"):
        _model()([{"views": x["views"]} for x in _batch()])


def test_exclude_same_image_reaches_every_term_of_every_level():
    model = _model("MODEL.MOCO.SHUFFLE_BN", "False", "MODEL.MOCO.EXCLUDE_SAME_IMAGE", "True")
    batch = [dict(x, image_id=f"img{i}.jpg") for i, x in enumerate(_batch())]
    model(batch)  # the four images' keys enter all eight queues with their ids
    ids = model.queues["res2_global"].ids.clone()
    assert int((ids >= 0).sum()) == 4
    assert all(torch.equal(q.ids, ids) for q in model.queues.values())
    rings = {name: q.queue.clone() for name, q in model.queues.items()}
    with torch.no_grad():
        online = model._online_container()
        q_g, q_l = model._embed(online, model.global_batch(batch, 0), model.patch_batch(batch, 0),
                                False)
        k_g, k_l = model._embed(model.target, model.global_batch(batch, 1),
                                model.patch_batch(batch, 1), False)
    own = model.queues["res2_global"].batch_ids(batch)
    with EventStorage() as storage:
        model(batch)  # the same images again
        logged = {k: v[0] for k, v in storage.latest().items()}
    for lvl in model.levels:
        args = (q_g[lvl], k_g[lvl], rings[f"{lvl}_global"], model.temperature, q_l[lvl],
                k_l[lvl], rings[f"{lvl}_local"])
        left_out = detco_level_terms(*args, exclude=(own, ids))
        kept = detco_level_terms(*args)
        for name, value in left_out.items():
            assert logged[f"detco/{lvl}_{name}"] == pytest.approx(value.item(), rel=1e-5)
            assert abs(value.item() - kept[name].item()) > 1e-6, (lvl, name)
