"""The low-label protocol: one seeded labelled subset for every init and seed, kept in
DIR/data and reused on resume; a pool holding a test image is refused. Trainings are faked."""
import json
import os
import shutil

import pytest

from soco_d2.pipeline import PipelineSpec, finetune_data_opts, run_pipeline
from soco_d2.pipeline import run as run_mod
from soco_d2.pipeline.run import load_config
from _data import write_small_voc
from _paths import REPO_ROOT
from soco_d2.pipeline.subset import (
    MANIFEST,
    draw_subset,
    parse_subset,
    subset_size,
    train_subset_opts,
)

PRE = os.path.join(REPO_ROOT, "configs/pretrain/soco_R18_FPN_tiny.yaml")
FT = os.path.join(REPO_ROOT, "configs/demo/mask_rcnn_R18_FPN_demo.yaml")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from soco_d2.data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("subset") / "demo"
    generate_demo_dataset(str(root), num_unlabeled=4, num_train=8, num_val=3, image_size=32)
    return root


@pytest.fixture(autouse=True)
def _datasets_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))


def _train(demo):
    return f"coco:{demo}/annotations/instances_train.json:{demo}/train"


def _val(demo):
    return f"coco:{demo}/annotations/instances_val.json:{demo}/val"


def _subset(out, demo, size, seed=0):
    spec = PipelineSpec(output=str(out), train_subset=size, subset_seed=seed)
    opts = {FT: finetune_data_opts(load_config(FT), _train(demo), _val(demo))}
    return train_subset_opts(spec, str(out), opts)


def _forget(*names):
    """What a training subprocess starts with: none of these registered."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_subset_requests_and_their_errors():
    assert parse_subset("12") == 12 and parse_subset(12) == 12 and parse_subset("1") == 1
    assert parse_subset("0.1") == 0.1 and parse_subset("1.0") == 1.0 and parse_subset(0.5) == 0.5
    for bad, match in [("0", "at least 1"), ("-3", "at least 1"), (0, "at least 1"),
                       ("0.0", r"in \(0, 1\]"), ("1.5", r"in \(0, 1\]"), (-0.2, r"in \(0, 1\]"),
                       ("ten", "expected N images"), (True, "expected a number")]:
        with pytest.raises(ValueError, match=match):
            parse_subset(bad)
    assert subset_size(12, 120) == 12 and subset_size(0.1, 120) == 12
    assert subset_size(1.0, 120) == 120 and subset_size(0.001, 120) == 1  # at least one image
    with pytest.raises(ValueError, match="holds only 120 images"):
        subset_size(121, 120)


def test_draw_is_seeded_order_free_and_nested():
    ids = list(range(1, 121))
    first = draw_subset(ids, 12, seed=0)
    assert len(first) == 12 and set(first) <= {str(i) for i in ids}
    assert first == sorted(first, key=int)  # in the train set's order
    assert draw_subset(ids[::-1], 12, seed=0) == first[::-1]  # the same images, listed as given
    assert draw_subset(ids, 12, seed=1) != first
    assert set(first) < set(draw_subset(ids, 24, seed=0))  # 12 labelled images lie in 24


def test_subset_is_written_once_and_registers_in_a_fresh_process(tmp_path, demo):
    out = tmp_path / "out"
    opts, manifest = _subset(out, demo, "0.375")  # 3 of the 8 train images
    name = "pipeline_train_subset3_s0"
    assert manifest["name"] == name and (manifest["size"], manifest["total"]) == (3, 8)
    assert manifest["dataset"] == "pipeline_train" and manifest["seed"] == 0
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk == manifest
    assert [im["image_id"] for im in manifest["images"]] == draw_subset(range(1, 9), 3, 0)
    o = opts[FT]
    assert o[-2:] == ["DATASETS.TRAIN", repr((name,))]
    assert f"{name}=coco:{out}/data/{name}.json:{demo}/train" in o[o.index(
        "DATASETS.SSL.REGISTER", len(o) - 4) + 1]
    # what a training subprocess does with the overrides
    from detectron2.data import DatasetCatalog

    from soco_d2.engine import load_cfg

    _forget(name, "pipeline_train", "pipeline_test")
    cfg = load_cfg(FT, o)
    assert cfg.DATASETS.TRAIN == (name,) and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 6
    records = DatasetCatalog.get(name)
    assert sorted(str(r["image_id"]) for r in records) == sorted(
        im["image_id"] for im in manifest["images"])
    assert all(os.path.isfile(r["file_name"]) and r["annotations"] for r in records)

    mtime = os.path.getmtime(out / MANIFEST)
    again, same = _subset(out, demo, 3)  # 3 images or 0.375 of 8: the same subset, reused
    assert again == opts and same == manifest and os.path.getmtime(out / MANIFEST) == mtime
    for size, seed in ((4, 0), (3, 1)):
        with pytest.raises(ValueError, match="drawn with dataset 'pipeline_train', size 3"):
            _subset(out, demo, size, seed)
    with pytest.raises(ValueError, match="give --train-subset 3 --subset-seed 0"):
        _subset(out, demo, None)
    with pytest.raises(ValueError, match="holds only 8 images"):
        _subset(tmp_path / "other", demo, 9)
    neon = os.path.join(REPO_ROOT, "configs/real/faster_rcnn_R18_FPN_neon_trees.yaml")
    spec = PipelineSpec(output=str(tmp_path / "two"), train_subset=3)
    with pytest.raises(ValueError, match="train on .*neon_trees_train.*soco_demo_train.*give "
                       "--train"):
        train_subset_opts(spec, spec.output, {FT: [], neon: []})


def test_a_full_label_output_refuses_a_subset(tmp_path, demo):
    out = tmp_path / "out"
    os.makedirs(out / ".done")
    (out / ".done/finetune__scratch_seed0.json").write_text("{}")
    with pytest.raises(ValueError, match="trained on the whole train set"):
        _subset(out, demo, 3)
    assert not (out / MANIFEST).exists()


def test_a_voc_train_set_becomes_a_coco_subset(tmp_path):
    ids = [f"im{i}" for i in range(6)]
    root = write_small_voc(tmp_path / "voc", ids=ids, splits={"train": ids})
    spec = PipelineSpec(output=str(tmp_path / "out"), train_subset=2, subset_seed=3)
    opts = {FT: finetune_data_opts(load_config(FT), f"voc:{root}:train", None)}
    opts, manifest = train_subset_opts(spec, spec.output, opts)
    assert [im["image_id"] for im in manifest["images"]] == draw_subset(ids, 2, 3)
    from detectron2.data import DatasetCatalog

    from soco_d2.engine import load_cfg

    _forget(manifest["name"], "pipeline_train")
    cfg = load_cfg(FT, opts[FT])
    records = DatasetCatalog.get(manifest["name"])
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1 and len(records) == 2
    assert records[0]["annotations"][0]["bbox"] == pytest.approx([4.0, 5.0, 26.0, 35.0])
    assert {os.path.basename(r["file_name"]) for r in records} == {
        f"{i}.jpg" for i in draw_subset(ids, 2, 3)}


@pytest.fixture
def fake(monkeypatch):
    """Trainings, evaluations, selective search and conversions stand-ins."""
    calls = []

    def run_training(config, output_dir, opts, log_path, threads=2, launch_args=()):
        calls.append((os.path.basename(output_dir), dict(zip(opts[::2], opts[1::2]))))
        os.makedirs(output_dir, exist_ok=True)

    def evaluate(config, opts, weights, output_dir):
        seed = int(opts[opts.index("SEED") + 1])
        gain = 0.0 if "scratch" in output_dir else 1.0 + 0.1 * seed
        return {"bbox": {"AP": 20.0 + seed + gain}}

    monkeypatch.setattr(run_mod, "run_training", run_training)
    monkeypatch.setattr(run_mod, "evaluate", evaluate)
    monkeypatch.setattr(run_mod, "detector_state", lambda config, opts: {})
    monkeypatch.setattr(run_mod, "_selective_search", lambda spec, proposals, logs: {})
    monkeypatch.setattr(run_mod, "proposals_note", lambda *a: "Proposals: none searched here.")
    monkeypatch.setattr(run_mod, "_convert", lambda src, dst, arch, groups, *a: {
        "groups": list(groups)})
    return calls


def _spec(tmp_path, demo, pool, **kw):
    base = dict(output=str(tmp_path / "out"), pretrains={"soco": PRE}, finetune_config=FT,
                inits=["soco", "scratch"], seeds=[0, 1, 2], plots=False, unlabeled=str(pool),
                train=_train(demo), test=_val(demo), train_subset=3)
    return PipelineSpec(**{**base, **kw})


def test_every_init_and_seed_fine_tunes_on_one_subset(tmp_path, demo, fake):
    spec = _spec(tmp_path, demo, demo / "unlabeled")
    run_pipeline(spec)
    finetunes = [(run, o) for run, o in fake if "_seed" in run]
    assert len(finetunes) == 6
    assert {o["DATASETS.TRAIN"] for _, o in finetunes} == {"('pipeline_train_subset3_s0',)"}
    assert len({o["DATASETS.SSL.REGISTER"] for _, o in finetunes}) == 1
    md = (tmp_path / "out/results.md").read_text()
    assert ("Labelled set (low-label protocol): `pipeline_train_subset3_s0`, 3 of the 8 images "
            "of `pipeline_train`, drawn with subset seed 0") in md
    assert ("Test images in a pretraining pool: none (same file bytes, sha256; 3 test images "
            "of `pipeline_test`, 4 pool images of `pipeline_unlabeled`).") in md
    assert "paired by seed" in md and "ahead (3 seeds)" in md  # +1.0, +1.1, +1.2
    n = len(fake)
    with pytest.raises(ValueError, match="drawn with"):  # another subset seed, same output
        run_pipeline(_spec(tmp_path, demo, demo / "unlabeled", subset_seed=1))
    assert len(fake) == n


def test_a_pool_holding_a_test_image_is_refused(tmp_path, demo, fake):
    pool = tmp_path / "pool"
    shutil.copytree(demo / "unlabeled", pool)
    shutil.copy(demo / "train/train_000000.jpg", pool / "labelled_pixels_are_fine.jpg")
    shutil.copy(demo / "val/val_000001.jpg", pool / "renamed.jpg")
    with pytest.raises(ValueError, match=r"1 test image\(s\) of pipeline_test are in the "
                       r"pretraining pool pipeline_unlabeled .*val_000001.jpg = .*renamed.jpg"):
        run_pipeline(_spec(tmp_path, demo, pool, train_subset=None))
    assert fake == []  # nothing trained
    os.remove(pool / "renamed.jpg")
    run_pipeline(_spec(tmp_path, demo, pool, train_subset=None, seeds=[0]))
    md = (tmp_path / "out/results.md").read_text()
    assert "every image of the fine-tune train set (full-label protocol)" in md
    assert "none (same file bytes, sha256; 3 test images" in md and "5 pool images" in md


def test_same_files_compares_bytes_not_names_or_sizes(tmp_path):
    from soco_d2.pipeline.overlap import same_files

    paths = {}
    for name, data in (("t1", b"abcd"), ("t2", b"wxyz"), ("p1", b"abcz"), ("p2", b"wxyz"),
                       ("p3", b"other size")):
        paths[name] = str(tmp_path / name)
        (tmp_path / name).write_bytes(data)
    pairs, hashed = same_files([paths["t1"], paths["t2"]], [paths["p1"], paths["p2"],
                                                            paths["p3"]])
    assert pairs == [(paths["t2"], paths["p2"])] and hashed == 4  # p3's size is no test's


def test_flags_and_the_lowlabel_preset(load_script):
    import inspect

    from soco_d2.data.demo import generate_demo_dataset

    module = load_script("tools/pipeline.py")

    def cli(*argv):
        return module.build_spec(module.get_parser().parse_args(["--output", "o", *argv]))

    low, full = cli("--preset", "bench-methods"), cli("--preset", "bench-methods-fulllabel")
    assert (low.train_subset, low.subset_seed, full.train_subset) == (12, 0, None)
    assert (low.inits, low.seeds) == (full.inits, [0, 1, 2])
    # at most 10% of the demo's train images labelled, a pool at least 10x the labelled images
    demo = {k: p.default for k, p in inspect.signature(generate_demo_dataset).parameters.items()}
    assert low.train_subset <= 0.1 * demo["num_train"]
    assert demo["num_unlabeled"] >= 10 * low.train_subset
    spec = cli("--preset", "bench-methods-fulllabel", "--train-subset", "0.1", "--subset-seed", "4")
    assert (spec.train_subset, spec.subset_seed) == ("0.1", 4)
    for argv, match in [(["--train-subset", "0"], "at least 1"),
                        (["--train-subset", "1.5"], r"in \(0, 1\]"),
                        (["--subset-seed", "2"], "give --train-subset")]:
        with pytest.raises(SystemExit, match=match):
            cli("--preset", "bench-methods-fulllabel", *argv)
