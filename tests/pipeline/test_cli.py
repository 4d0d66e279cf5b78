"""tools/pipeline.py: presets, repeatable --pretrain, data and launch flags, clear flag errors."""
import os

import pytest

from soco_d2.checkpoint import GROUPS
from soco_d2.pipeline import BENCH_METHODS, BENCH_METHODS_FULL, BENCH_REAL, preset_from_rows
from _paths import REPO_ROOT

PRE = os.path.join(REPO_ROOT, "configs/pretrain/soco_R18_FPN_tiny.yaml")
FT = os.path.join(REPO_ROOT, "configs/demo/mask_rcnn_R18_FPN_demo.yaml")


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))
    from soco_d2.tools import pipeline as module
    return lambda *argv: module.build_spec(module.get_parser().parse_args(["--output", "o", *argv]))


def test_presets_and_overrides(cli, tmp_path):
    bench = cli("--preset", "bench-transfer", "--inits", "soco,scratch",
                "--finetune-opts", "SOLVER.MAX_ITER", "10")
    assert bench.seeds == [0, 1, 2] and bench.inits == ["soco", "scratch"]
    assert bench.finetune_opts == ["SOLVER.MAX_ITER", "10"]
    assert bench.proposals[1] == str(tmp_path / "ds/demo/proposals_unlabeled")
    demo = cli("--preset", "demo", "--seeds", "2")
    assert demo.seeds == [0, 1] and demo.pretrains == bench.pretrains
    assert set(demo.pretrains) == {"soco"} and os.path.isfile(demo.pretrains["soco"])
    from soco_d2.engine import load_cfg

    # the demo is bench-methods' SoCo and scratch rows: its low-label subset, detector and seeds;
    # bench-transfer fine-tunes the same pretraining on all the labels
    methods = cli("--preset", "bench-methods")
    demo = cli("--preset", "demo")
    assert demo.seeds == methods.seeds == [0, 1, 2] and demo.inits == ["soco", "scratch"]
    assert (demo.train_subset, demo.subset_seed) == (methods.train_subset, methods.subset_seed)
    for init in demo.inits:
        assert demo.finetune_configs[init] == methods.finetune_configs[init]
    assert demo.pretrains["soco"] == methods.pretrains["soco"]
    assert load_cfg(demo.finetune_config, []).SOLVER.MAX_ITER == 240
    assert load_cfg(bench.finetune_config, []).SOLVER.MAX_ITER == 800
    assert bench.train_subset is None
    assert cli("--preset", "demo", "--transfer", "backbone, fpn,box_head").transfer == list(GROUPS)
    with pytest.raises(SystemExit, match="subset of"):
        cli("--preset", "demo", "--transfer", "backbone,neck")


def test_pretrain_flags_and_name_clashes(cli):
    spec = cli("--pretrain", f"a={PRE}", "--pretrain", f"b-2={PRE}", "--finetune-config", FT)
    assert spec.pretrains == {"a": PRE, "b-2": PRE} and spec.inits == []  # all + scratch
    with pytest.raises(SystemExit):  # no method is the default: every pretraining is named
        cli("--pretrain-config", PRE, "--finetune-config", FT)
    with pytest.raises(SystemExit, match="no pretraining is named 'soco'"):
        cli("--finetune-config", FT, "--inits", "soco,scratch")
    with pytest.raises(SystemExit, match="already names a pretraining"):
        cli("--pretrain", f"soco={PRE}", "--finetune-config", FT, "--inits", f"soco={PRE}")
    with pytest.raises(SystemExit, match="does not exist"):
        cli("--pretrain", "soco=missing.yaml", "--finetune-config", FT)
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        cli("--pretrain", PRE, "--finetune-config", FT)
    with pytest.raises(SystemExit, match="finetune-config"):
        cli("--pretrain", f"a={PRE}")
    # a pretraining added to a preset is compared too
    more = cli("--preset", "demo", "--pretrain", f"mine={PRE}")
    assert more.inits == ["soco", "scratch", "mine"]
    # presets run fine-tunes two at a time; flags override; launch flags need one at a time
    assert (cli("--preset", "demo").jobs, cli("--preset", "demo").threads) == (2, 2)
    alone = cli("--preset", "demo", "--jobs", "1", "--threads", "4")
    assert (alone.jobs, alone.threads) == (1, 4)
    plain = cli("--pretrain", f"a={PRE}", "--finetune-config", FT)
    assert (plain.jobs, plain.threads) == (1, 2)
    with pytest.raises(SystemExit, match="one at a time"):
        cli("--preset", "demo", "--num-gpus", "2")
    assert cli("--preset", "demo", "--num-gpus", "2", "--jobs", "1").launch_args[:2] == [
        "--num-gpus", "2"]


def test_data_launch_and_per_init_detector_flags(cli, tmp_path):
    spec = cli("--pretrain", f"a={PRE}", "--finetune-config", FT, "--unlabeled", "imgs",
               "--train", "voc:/v:train", "--test", "voc:/v:val", "--num-gpus", "2",
               "--num-machines", "2", "--machine-rank", "1", "--dist-url", "tcp://h:9",
               "--finetune-config", f"a={PRE}")
    assert (spec.unlabeled, spec.train, spec.test) == ("imgs", "voc:/v:train", "voc:/v:val")
    assert spec.launch_args == ["--num-gpus", "2", "--num-machines", "2", "--machine-rank", "1",
                                "--dist-url", "tcp://h:9"]
    assert spec.finetune_config == FT and spec.finetune_configs == {"a": PRE}
    assert cli("--pretrain", f"a={PRE}", "--finetune-config", FT).launch_args == []


def test_bench_methods_preset_is_data_driven(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))
    names = [r[0] for r in BENCH_METHODS]
    # SoCo first, then the other ResNet methods (a new one is one more row), then their scratch
    r18_methods = set(names[1 : names.index("scratch")])
    assert names[0] == "soco" and {"mocov2", "densecl", "detco", "byol"} <= r18_methods
    r18, vit = str(tmp_path / "r18.yaml"), str(tmp_path / "vit.yaml")
    open(r18, "w").close()
    rows = [("soco", PRE, r18), ("moco", str(tmp_path / "absent.yaml"), r18),
            ("scratch", None, r18), ("sim", PRE, vit), ("scratch_vit", None, vit)]
    fields = preset_from_rows(rows, [0, 1, 2])  # vit.yaml is missing: the ViT block goes
    assert fields["inits"] == ["soco", "scratch"] and fields["pretrains"] == {"soco": PRE}
    assert fields["finetune_configs"] == {"soco": r18, "scratch": r18}
    open(vit, "w").close()
    fields = preset_from_rows(rows, [0])
    assert fields["inits"] == ["soco", "scratch", "sim", "scratch_vit"]
    assert fields["finetune_configs"]["scratch_vit"] == vit and fields["transfer"] == [
        "backbone", "fpn"]
    # a scratch whose detector has no pretraining left is not run alone
    only_scratch = preset_from_rows([("sim", str(tmp_path / "absent.yaml"), vit),
                                     ("scratch_vit", None, vit), ("soco", PRE, r18)], [0])
    assert only_scratch["inits"] == ["soco"]


def test_bench_methods_detectors_share_one_fine_tune_budget():
    """Every detector family of `make bench-methods` fine-tunes on the same schedule and data
    (the same lr steps, the 480 val images), so the ViT block's rows are at the R-18 block's
    budget: 800 iterations of 4 of the 120 images (27 epochs) full-label, 240 of 4 of the 12
    (80 epochs) low-label."""
    from soco_d2.engine.setup import load_cfg

    def budget(path):
        cfg = load_cfg(os.path.join(REPO_ROOT, path), register=False)
        s = cfg.SOLVER
        return (s.MAX_ITER, tuple(s.STEPS), s.IMS_PER_BATCH, s.WARMUP_ITERS,
                tuple(cfg.DATASETS.TRAIN), tuple(cfg.DATASETS.TEST))

    for rows, labelled, epochs, expected in [
            (BENCH_METHODS_FULL, 120, 27, (800, (600, 740), 4, 50)),
            (BENCH_METHODS, 12, 80, (240, (180, 222), 4, 15))]:
        detectors = sorted({d for _, _, d in rows})
        assert len(detectors) == 2  # the R-18 FPN and the tiny ViTDet Mask R-CNN
        assert budget(detectors[0]) == budget(detectors[1])
        assert budget(detectors[0])[:4] == expected
        max_iter, _, batch = expected[:3]
        assert round(max_iter * batch / labelled) == epochs
    # the two protocols compare the same methods with the same pretrainings
    assert [r[:2] for r in BENCH_METHODS] == [r[:2] for r in BENCH_METHODS_FULL]


def test_bench_real_preset_is_the_low_label_protocol_on_neon(cli, tmp_path):
    # before `make bench-data-real` the preset says what to run first
    with pytest.raises(SystemExit, match="make bench-data-real"):
        cli("--preset", "bench-real")
    neon = tmp_path / "ds" / "neon_trees"
    (neon / "unlabeled").mkdir(parents=True)
    spec = cli("--preset", "bench-real")
    assert spec.inits == [name for name, _, _ in BENCH_REAL]
    assert set(spec.pretrains) == {"soco", "mocov2", "densecl", "detco"}
    assert (spec.train, spec.test) == ("neon_trees_train", "neon_trees_val")
    assert spec.unlabeled == str(neon / "unlabeled") and spec.demo_data is None
    assert spec.proposals == (str(neon / "unlabeled"), str(neon / "proposals_unlabeled"))
    # DenseCL with its recipe for small real sets (views at the crowns' scale), the others with
    # the demo's
    recipes = {n: os.path.basename(os.path.dirname(c)) for n, c in spec.pretrains.items()}
    assert recipes == {"soco": "demo", "mocov2": "demo", "densecl": "small", "detco": "demo"}
    # at most a quarter of the 106 train tiles labelled, the same subset for every init and seed
    assert (spec.train_subset, spec.subset_seed, spec.seeds) == (20, 0, [0, 1, 2])
    assert set(spec.finetune_configs.values()) == {spec.finetune_config}
    assert spec.finetune_config.endswith(
        "configs/real/faster_rcnn_R18_FPN_neon_trees_lowlabel.yaml")
    # 70 epochs of the 20 labelled tiles, the full-label recipe's lr steps and warm-up fractions
    from soco_d2.engine.setup import load_cfg

    low = load_cfg(spec.finetune_config, register=False).SOLVER
    full = load_cfg(spec.finetune_config.replace("_lowlabel", ""), register=False).SOLVER
    assert low.MAX_ITER * low.IMS_PER_BATCH / spec.train_subset == 70
    for mine, ref in [(low.STEPS, full.STEPS), ((low.WARMUP_ITERS,), (full.WARMUP_ITERS,))]:
        # the same fractions to the whole percent the configs state them in (75 %, 92 %, 6 %)
        assert [m / low.MAX_ITER for m in mine] == pytest.approx(
            [r / full.MAX_ITER for r in ref], abs=0.01)
