"""Named pipeline setups (``tools/pipeline.py --preset NAME``); flags override their fields.

A preset is data: rows of ``(init name, pretraining config or None for scratch, detector
config)``, so a comparison over several detector families (ResNet-FPN Mask R-CNN, ViTDet) is
one more block of rows. Rows whose configs are not in the repository are left out with a note,
and a scratch row is kept only while some pretraining is compared with it.
"""
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple


__all__ = ["BENCH_METHODS", "BENCH_METHODS_FULL", "BENCH_REAL", "PRESETS", "preset_from_rows"]

Row = Tuple[str, Optional[str], str]

_DEMO = "configs/demo"
_SMALL = "configs/small"
_R18_800 = f"{_DEMO}/mask_rcnn_R18_FPN_demo_800it.yaml"
_VIT_800 = f"{_DEMO}/vitdet_mask_rcnn_tiny_demo_800it.yaml"
# 80 epochs of the 12 labelled images of `make bench-methods` (240 iterations)
_R18_LOW = f"{_DEMO}/mask_rcnn_R18_FPN_demo_lowlabel.yaml"
_VIT_LOW = f"{_DEMO}/vitdet_mask_rcnn_tiny_demo_lowlabel.yaml"


def _demo_methods(r18: str, vit: str) -> Tuple[Row, ...]:
    """Every method on the demo data against scratch, per detector family."""
    return (
        ("soco", f"{_DEMO}/soco_R18_FPN_demo.yaml", r18),
        ("mocov2", f"{_DEMO}/mocov2_R18_demo.yaml", r18),
        ("densecl", f"{_DEMO}/densecl_R18_demo.yaml", r18),
        ("detco", f"{_DEMO}/detco_R18_demo.yaml", r18),
        ("byol", f"{_DEMO}/byol_R18_demo.yaml", r18),
        ("scratch", None, r18),
        # the ViT block: SIM vs a ViT detector from scratch, same seeds
        ("sim", f"{_DEMO}/sim_vit_tiny_demo.yaml", vit),
        ("scratch_vit", None, vit),
    )


# `make bench-methods`: the low-label protocol (12 of the 120 labelled demo images).
BENCH_METHODS: Tuple[Row, ...] = _demo_methods(_R18_LOW, _VIT_LOW)
# `make bench-methods-fulllabel`: the same rows fine-tuned on all 120 labelled images.
BENCH_METHODS_FULL: Tuple[Row, ...] = _demo_methods(_R18_800, _VIT_800)


# 70 epochs of the 20 labelled tiles of `make bench-real` (350 iterations)
_NEON = "configs/real/faster_rcnn_R18_FPN_neon_trees_lowlabel.yaml"

# `make bench-real`: the four ResNet methods against scratch on the NEON photographs. DenseCL
# pretrains with its recipe for small real sets (configs/small/: views at the crowns' scale),
# ahead of its demo recipe there (+0.74 +- 0.11 box AP, 3 paired seeds); SoCo's, MoCo v2's and
# DetCo's were not (docs/real_data.md, "Per-method recipes").
BENCH_REAL: Tuple[Row, ...] = (
    ("soco", f"{_DEMO}/soco_R18_FPN_demo.yaml", _NEON),
    ("mocov2", f"{_DEMO}/mocov2_R18_demo.yaml", _NEON),
    ("densecl", f"{_SMALL}/densecl_R18_neon.yaml", _NEON),
    ("detco", f"{_DEMO}/detco_R18_demo.yaml", _NEON),
    ("scratch", None, _NEON),
)


def _config(path: str) -> str:
    """A row's config: a file, or one of the shipped configs (``soco_d2.model_zoo``)."""
    from soco_d2.model_zoo import resolve_config

    return resolve_config(path)


def _demo_data() -> Dict:
    """The embedded demo: generated on first use, pretraining on its 600 unlabeled images."""
    from soco_d2.data.datasets import datasets_root

    demo = os.path.join(datasets_root(), "demo")
    return dict(
        demo_data={},  # generate_demo_dataset's defaults: 600 unlabeled, 120 train, 480 val
        proposals=(os.path.join(demo, "unlabeled"), os.path.join(demo, "proposals_unlabeled")),
    )


def _neon_data() -> Dict:
    """NEON tree crowns as ``make bench-data-real`` writes them (docs/real_data.md)."""
    from soco_d2.data.datasets import datasets_root

    neon = os.path.join(datasets_root(), "neon_trees")
    unlabeled = os.path.join(neon, "unlabeled")
    if not os.path.isdir(unlabeled):
        raise FileNotFoundError(
            f"{unlabeled} not found: run `make bench-data-real` first (docs/real_data.md)"
        )
    return dict(
        unlabeled=unlabeled,
        proposals=(unlabeled, os.path.join(neon, "proposals_unlabeled")),
        train="neon_trees_train",
        test="neon_trees_val",
    )


def preset_from_rows(
    rows: Sequence[Row], seeds: List[int], data: Optional[Callable[[], Dict]] = None
) -> Dict:
    """PipelineSpec fields for rows of ``(init, pretraining config or None, detector config)``.

    Args:
        rows: see :data:`BENCH_METHODS`; ``configs/...`` paths name the shipped
            configs (found from a checkout or an installed wheel alike).
        seeds: fine-tune seeds of every init.
        data: returns the data fields (unlabeled pool, proposals, train and test sets);
            default: the embedded demo.

    Returns:
        ``pretrains``, ``inits``, ``finetune_config`` (the first row's detector),
        ``finetune_configs`` and ``seeds``, plus the data fields.
    """
    kept = []
    for name, pretrain, detector in rows:
        missing = [p for p in (pretrain, detector) if p and not os.path.isfile(_config(p))]
        if missing:
            print(f"[pipeline] preset: {name} left out ({', '.join(missing)} not found)")
            continue
        kept.append((name, pretrain and _config(pretrain), _config(detector)))
    compared = {d for _, p, d in kept if p}
    kept = [r for r in kept if r[1] or r[2] in compared]
    if not kept:
        raise ValueError("preset: none of its configs exist")
    return dict(
        pretrains={n: p for n, p, _ in kept if p},
        inits=[n for n, _, _ in kept],
        finetune_config=kept[0][2],
        finetune_configs={n: d for n, _, d in kept},
        seeds=seeds,
        **(data or _demo_data)(),
        selective_search_args=["--workers", "2", "--no-progress"],
        # At this scale the pretrained box head lowers fine-tuned box AP; backbone + FPN raise
        # it (README, "make bench-transfer"). Backbone-only methods transfer their backbone.
        transfer=["backbone", "fpn"],
        # fine-tunes two at a time, one thread each (of the default 2): on 2 CPU cores 1.28x
        # (R-18 FPN) and 1.34x (ViTDet) faster than one after another with 2 threads
        # (dev/bench_jobs.py, docs/benchmarks.md); pretrainings stay one at a time
        jobs=2,
    )


def _soco_vs_scratch(seeds: List[int], detector: str) -> Dict:
    soco = f"{_DEMO}/soco_R18_FPN_demo.yaml"
    return preset_from_rows([("soco", soco, detector), ("scratch", None, detector)], seeds)


# the demo's low-label protocol: the same 12 of the 120 labelled images for every init and seed
_DEMO_LOW_LABEL = {"train_subset": 12, "subset_seed": 0}


# Preset name -> PipelineSpec fields.
PRESETS: Dict[str, Callable[[], Dict]] = {
    # `make demo`: the embedded demo in the low-label protocol of `make bench-methods`, SoCo
    # init vs scratch at 3 paired seeds (the verdict's minimum): its SoCo and scratch rows.
    "demo": lambda: {**_soco_vs_scratch([0, 1, 2], _R18_LOW), **_DEMO_LOW_LABEL},
    # `make bench-transfer`: the same pretraining; both inits fine-tuned 800 iterations (closer
    # to convergence, half the seed spread of 400) over 3 seeds.
    "bench-transfer": lambda: _soco_vs_scratch([0, 1, 2], _R18_800),
    # `make bench-methods`: the low-label protocol on the demo: every fine-tune trains on the
    # same 12 of the 120 labelled images (10 %, subset seed 0) with the detectors of
    # BENCH_METHODS (80 epochs of them), every pretraining on the 600 unlabeled ones (50x
    # that); every ResNet method vs scratch on the R-18 FPN, SIM vs scratch on the ViT
    # detector; 3 paired seeds, the verdict's minimum.
    "bench-methods": lambda: {**preset_from_rows(BENCH_METHODS, [0, 1, 2]), **_DEMO_LOW_LABEL},
    # `make bench-methods-fulllabel`: the same pretrainings, every fine-tune on all 120
    # labelled images for 800 iterations (docs/demo_results.md's full-label tables).
    "bench-methods-fulllabel": lambda: preset_from_rows(BENCH_METHODS_FULL, [0, 1, 2]),
    # `make bench-real`: the low-label protocol on real photographs: every fine-tune trains on
    # the same 20 of the 106 NEON train tiles (19 %, subset seed 0), every pretraining on the
    # 243 unlabeled windows (12x that); 3 paired seeds.
    "bench-real": lambda: {
        **preset_from_rows(BENCH_REAL, [0, 1, 2], data=_neon_data),
        "train_subset": 20,
        "subset_seed": 0,
    },
}
