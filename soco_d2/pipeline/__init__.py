"""The whole path as resumable stages: data, proposals, pretrainings, conversions, fine-tunes,
evaluation, results.

Output layout (``DIR`` = ``PipelineSpec.output``)::

    DIR/pipeline.jsonl                       one line per stage started, finished, failed, skipped
    DIR/.done/<stage>.json                   done-markers, written atomically after a stage
    DIR/logs/<stage>.log                     stdout+stderr of subprocess stages
    DIR/logs/<stage>.log.running             lock of the command running now (processes.py)
    DIR/logs/.pipeline.lock                  held by the pipeline running in DIR
    DIR/data/train_subset.json               the labelled subset (``--train-subset``): set, N of
                                             total, subset seed, image ids and file names
    DIR/data/<train>_subset<N>_s<S>.json     its COCO json, what every fine-tune trains on
    DIR/proposals/unlabeled.bin              proposals of ``--unlabeled`` (methods that use them)
    DIR/pretrain/<NAME>/                     OUTPUT_DIR of pretraining NAME (model_final.pth)
    DIR/pretrain/<NAME>/model_converted.pkl  its detector weights (soco_d2.checkpoint)
    DIR/weights/<NAME>.pkl                   converted ``NAME=CHECKPOINT`` inits
    DIR/finetune/<init>_seed<S>/             OUTPUT_DIR of each fine-tune (metrics.json,
                                             inference/, results.json = the evaluator's dict)
    DIR/results.json, DIR/results.md         all runs; per init mean +- std, pretraining time,
                                             paired verdict against scratch and its per-seed
                                             differences (soco_d2.utils.results), the labelled
                                             set, the test-pixel check
    DIR/plots/*.png                          training curves and prediction grids

Modules: ``spec.py`` (what to run, checks), ``data.py`` (data flags -> config overrides),
``subset.py`` (the low-label protocol's labelled subset), ``overlap.py`` (no test image in a
pretraining pool), ``stages.py`` (markers, trainings), ``processes.py`` (commands, output
locks), ``run.py`` (the order, as named steps),
``plots.py`` (the PNGs of ``DIR/plots``), ``presets.py``.
"""
from .data import finetune_data_opts, pretrain_data_opts, resolve_dataset
from .presets import BENCH_METHODS, BENCH_METHODS_FULL, BENCH_REAL, PRESETS, preset_from_rows
from .run import run_pipeline
from .spec import Init, PipelineSpec, is_scratch, parse_init, parse_named, resolve_inits
from .stages import StageRunner, run_command, run_training

__all__ = [
    "BENCH_METHODS",
    "BENCH_METHODS_FULL",
    "BENCH_REAL",
    "Init",
    "PRESETS",
    "PipelineSpec",
    "StageRunner",
    "finetune_data_opts",
    "is_scratch",
    "parse_init",
    "parse_named",
    "preset_from_rows",
    "pretrain_data_opts",
    "resolve_dataset",
    "resolve_inits",
    "run_command",
    "run_pipeline",
    "run_training",
]
