"""The whole path as resumable stages: data, proposals, pretrain, convert, fine-tune, evaluate.

Output layout (``DIR`` = ``PipelineSpec.output``)::

    DIR/pipeline.jsonl                  one line per stage run or skipped (the stage log)
    DIR/.done/<stage>.json              done-markers, written atomically after a stage finished
    DIR/logs/<stage>.log                stdout+stderr of subprocess stages
    DIR/pretrain/                       detectron2 OUTPUT_DIR of pretraining (model_final.pth)
    DIR/pretrain/model_converted.pkl    detector weights (soco_d2.checkpoint)
    DIR/finetune/<init>_seed<S>/        OUTPUT_DIR of each fine-tune (metrics.json, inference/,
                                        results.json = the evaluator's dict)
    DIR/results.json, DIR/results.md    all runs, mean +- std per init (soco_d2.utils.results)
    DIR/plots/*.png                     training curves and prediction grids

A stage whose marker exists is skipped. Training runs as a subprocess of ``tools/train_net.py``
with ``--resume``, so a killed stage continues from its last checkpoint. The summary and plots
are rebuilt from the finished runs on every call (they are cheap and must include new runs).
"""
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from soco_d2.checkpoint import GROUPS, check_groups
from soco_d2.utils.results import format_console, results_table, write_json_atomic

__all__ = ["PipelineSpec", "StageRunner", "parse_init", "run_pipeline", "run_training"]

logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class PipelineSpec:
    """Everything a pipeline run needs.

    Attributes:
        output: output directory DIR.
        pretrain_config / finetune_config: YAML configs (fine-tune: a GeneralizedRCNN).
        inits: ``"soco"`` (this run's pretraining), ``"scratch"`` (MODEL.WEIGHTS ""), or
            ``"NAME=PATH"``: a checkpoint converted with soco_d2.checkpoint first (.pkl/.pth),
            or a detectron2 weights file.
        seeds: fine-tune seeds (each init is fine-tuned once per seed).
        pretrain_opts / finetune_opts: ``KEY VALUE`` overrides for the two configs.
        demo_data: keyword arguments of ``generate_demo_dataset`` (None: no data stage).
        proposals: ``(image dir, cache path)`` for selective search (None: no stage).
        selective_search_args: extra flags of tools/selective_search.py.
        transfer: the groups of ``soco_d2.checkpoint.GROUPS`` the pipeline's conversions keep
            (``soco`` and ``NAME=PATH`` checkpoints; a detectron2 .pkl is used as it is).
        threads: torch threads of the training subprocesses and in-process evaluation.
        plots: draw PNG plots at the end.
    """

    output: str
    pretrain_config: str = ""
    finetune_config: str = ""
    inits: List[str] = field(default_factory=lambda: ["soco", "scratch"])
    seeds: List[int] = field(default_factory=lambda: [0])
    pretrain_opts: List[str] = field(default_factory=list)
    finetune_opts: List[str] = field(default_factory=list)
    demo_data: Optional[Dict] = None
    proposals: Optional[Tuple[str, str]] = None
    selective_search_args: List[str] = field(default_factory=list)
    transfer: List[str] = field(default_factory=lambda: list(GROUPS))
    threads: int = 2
    plots: bool = True


class StageRunner:
    """Runs named stages once: a stage with a done-marker is skipped, every event is logged."""

    def __init__(self, output: str):
        self.output = output
        self.marker_dir = os.path.join(output, ".done")
        self.log_path = os.path.join(output, "pipeline.jsonl")
        os.makedirs(self.marker_dir, exist_ok=True)

    def marker(self, name: str) -> str:
        return os.path.join(self.marker_dir, name.replace("/", "__") + ".json")

    def done(self, name: str) -> bool:
        return os.path.isfile(self.marker(name))

    def info(self, name: str) -> Dict:
        with open(self.marker(name)) as f:
            return json.load(f)

    def _log(self, name: str, event: str, **extra) -> None:
        with open(self.log_path, "a") as f:
            row = {"stage": name, "event": event, "time": time.time(), **extra}
            f.write(json.dumps(row) + "\n")

    def run(self, name: str, fn: Callable[[], Optional[Dict]]) -> Dict:
        """Run ``fn`` unless ``name`` is done; return what the marker holds.

        ``fn`` returns a small JSON-able dict stored in the marker. An exception leaves no
        marker (the stage reruns, resuming from whatever it left), is logged, and propagates.
        """
        if self.done(name):
            logger.info("[pipeline] %s: done before, skipped", name)
            self._log(name, "skipped")
            return self.info(name)
        print(f"[pipeline] {name} ...", flush=True)
        start = time.time()
        self._log(name, "started")
        try:
            info = dict(fn() or {})
        except BaseException as e:  # KeyboardInterrupt too: record it, then re-raise
            self._log(name, "failed", error=repr(e)[:500])
            raise
        info["seconds"] = round(time.time() - start, 1)
        write_json_atomic(info, self.marker(name))
        self._log(name, "finished", seconds=info["seconds"])
        print(f"[pipeline] {name} done in {info['seconds']:.0f} s", flush=True)
        return info

    def history(self) -> List[Dict]:
        if not os.path.isfile(self.log_path):
            return []
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]


def _subprocess_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_command(cmd: Sequence[str], log_path: str, threads: int = 2) -> str:
    """Run ``cmd`` with stdout and stderr streamed into ``log_path``; return what it printed.

    Raises:
        RuntimeError: with the log's last lines when the command fails.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        start = log.tell()
        proc = subprocess.run(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, env=_subprocess_env(threads)
        )
    with open(log_path) as f:
        f.seek(start)
        output = f.read()
    if proc.returncode != 0:
        tail = "".join(output.splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return output


def run_training(
    config: str, output_dir: str, opts: Sequence[str], log_path: str, threads: int = 2
) -> None:
    """Train with ``tools/train_net.py --resume`` (continues from OUTPUT_DIR's last checkpoint)."""
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--resume"]
    cmd += ["--config-file", config, "OUTPUT_DIR", output_dir, *opts]
    run_command(cmd, log_path, threads)


def evaluate(config: str, opts: Sequence[str], weights: str, output_dir: str) -> Dict:
    """Evaluate ``weights`` on the config's DATASETS.TEST in this process.

    Returns:
        the evaluator's dict, e.g. ``{"bbox": {"AP": ...}, "segm": {...}}``; the COCO evaluator
        also writes ``output_dir/inference/coco_instances_results.json``.
    """
    from detectron2.checkpoint import DetectionCheckpointer

    from soco_d2.engine import Trainer, load_cfg

    cfg = load_cfg(config, [*opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", output_dir])
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    results = Trainer.test(cfg, model)
    return {k: dict(v) if isinstance(v, dict) else v for k, v in results.items()}


def parse_init(init: str) -> Tuple[str, Optional[str]]:
    """``"soco"`` -> ("soco", None); ``"moco=/w/moco.pth"`` -> ("moco", "/w/moco.pth")."""
    name, _, path = init.partition("=")
    if not name or "/" in name or (name not in ("soco", "scratch") and not path):
        raise ValueError(f"init must be 'soco', 'scratch' or 'NAME=PATH', got {init!r}")
    return name, (path or None)


def run_pipeline(spec: PipelineSpec) -> Dict[str, Dict[str, Dict]]:
    """Run (or resume) every stage of ``spec``; return ``{init: {"seed<S>": results}}``."""
    from soco_d2.checkpoint import convert_checkpoint

    out = os.path.abspath(spec.output)
    stages = StageRunner(out)
    logs = os.path.join(out, "logs")
    inits = [parse_init(i) for i in spec.inits]
    check_groups(spec.transfer)  # before the pretraining, not after it

    if spec.demo_data is not None:
        stages.run("data", lambda: _generate_demo(spec.demo_data))
    if spec.proposals is not None:
        stages.run("proposals", lambda: _selective_search(spec, logs))

    weights: Dict[str, str] = {"scratch": ""}
    if any(name == "soco" for name, _ in inits):
        pre_dir = os.path.join(out, "pretrain")
        stages.run(
            "pretrain",
            lambda: run_training(
                spec.pretrain_config, pre_dir, spec.pretrain_opts, f"{logs}/pretrain.log",
                spec.threads,
            ),
        )
        weights["soco"] = os.path.join(pre_dir, "model_converted.pkl")
        _check_transfer(
            spec,
            "convert",
            stages.run(
                "convert",
                lambda: _convert(
                    convert_checkpoint, f"{pre_dir}/model_final.pth", weights["soco"], spec.transfer
                ),
            ),
        )
    for name, path in inits:
        if path is None:
            continue
        if path.endswith(".pkl") and _is_detectron2_pkl(path):
            weights[name] = path
            continue
        weights[name] = os.path.join(out, "weights", f"{name}.pkl")
        _check_transfer(
            spec,
            f"convert_{name}",
            stages.run(
                f"convert_{name}",
                lambda p=path, n=name: _convert(convert_checkpoint, p, weights[n], spec.transfer),
            ),
        )

    results: Dict[str, Dict[str, Dict]] = {}
    for name, _ in inits:
        for seed in spec.seeds:
            run = f"{name}_seed{seed}"
            run_dir = os.path.join(out, "finetune", run)
            opts = [*spec.finetune_opts, "SEED", str(seed)]
            train_opts = [*opts, "MODEL.WEIGHTS", weights[name], "DATASETS.TEST", "()"]
            stages.run(
                f"finetune/{run}",
                lambda: run_training(
                    spec.finetune_config, run_dir, train_opts, f"{logs}/finetune_{run}.log",
                    spec.threads,
                ),
            )
            stages.run(f"evaluate/{run}", lambda: _evaluate_run(spec, opts, run_dir))
            with open(os.path.join(run_dir, "results.json")) as f:
                results.setdefault(name, {})[f"seed{seed}"] = json.load(f)

    write_json_atomic(results, os.path.join(out, "results.json"))
    table = results_table(results)
    with open(os.path.join(out, "results.md.tmp"), "w") as f:
        f.write(f"# Transfer results\n\nFine-tune config: `{spec.finetune_config}`\n\n{table}")
    os.replace(os.path.join(out, "results.md.tmp"), os.path.join(out, "results.md"))
    if spec.plots:
        _plot(spec, out, [n for n, _ in inits])
    print(format_console(results), flush=True)
    return results


def _generate_demo(kwargs: Dict) -> Dict:
    from soco_d2.data.demo import generate_demo_dataset
    from soco_d2.data.register import datasets_root

    root = os.path.join(datasets_root(), "demo")
    try:
        return {"root": root, "params": generate_demo_dataset(root, **kwargs)}
    except FileExistsError as e:
        # a finished demo set made with other parameters (e.g. by datasets/generate_demo.py):
        # use it rather than delete someone's data
        if not os.path.isfile(os.path.join(root, "params.json")):
            raise
        print(f"[pipeline] reusing the existing demo dataset ({e})", flush=True)
        with open(os.path.join(root, "params.json")) as f:
            return {"root": root, "params": json.load(f), "reused": True}


def _selective_search(spec: PipelineSpec, logs: str) -> Dict:
    image_dir, cache = spec.proposals
    if os.path.exists(cache):
        return {"cache": cache, "reused": True}
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "selective_search.py")]
    cmd += ["--input", image_dir, "--output", cache, *spec.selective_search_args]
    stdout = run_command(cmd, f"{logs}/proposals.log", spec.threads)
    summary = {}
    for line in reversed(stdout.strip().splitlines()):  # its last JSON line is the summary
        try:
            summary = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    return {"cache": cache, "reused": False, "summary": summary}


def _is_detectron2_pkl(path: str) -> bool:
    import pickle

    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    return isinstance(data, dict) and "model" in data and "__author__" in data


def _convert(convert_checkpoint, src: str, dst: str, groups: Sequence[str]) -> Dict:
    result = convert_checkpoint(src, dst, groups=groups)
    return {
        "layout": result.layout,
        "arch": result.arch,
        "counts": result.counts,
        "groups": list(groups),
    }


def _check_transfer(spec: PipelineSpec, stage: str, info: Dict) -> None:
    """A conversion done before with other groups would fine-tune from the wrong weights."""
    done_with = info.get("groups", list(GROUPS))  # markers written before this option
    if list(done_with) != list(spec.transfer):
        raise ValueError(
            f"{spec.output}: stage {stage} converted the groups {done_with}, this run asks for "
            f"{list(spec.transfer)}; use another --output (its fine-tunes used those weights)"
        )


def _evaluate_run(spec: PipelineSpec, opts: Sequence[str], run_dir: str) -> Dict:
    import torch

    torch.set_num_threads(spec.threads)
    weights = os.path.join(run_dir, "model_final.pth")
    results = evaluate(spec.finetune_config, opts, weights, run_dir)
    write_json_atomic(results, os.path.join(run_dir, "results.json"))
    return {"tasks": sorted(results)}


def _plot(spec: PipelineSpec, out: str, init_names: Sequence[str]) -> None:
    """Best effort: a failed plot is logged, never fails a finished pipeline."""
    try:
        from soco_d2.utils.plots import plot_pipeline

        plot_pipeline(out, init_names, spec.seeds, spec.finetune_config, spec.finetune_opts)
    except Exception as e:  # plots are a convenience; results are already written
        logger.warning("plotting failed: %r", e)
        print(f"[pipeline] plotting failed: {e!r}", flush=True)


def _demo_preset(seeds: List[int], finetune_config: str) -> Dict:
    from soco_d2.data.register import datasets_root

    demo = os.path.join(datasets_root(), "demo")
    return dict(
        pretrain_config=os.path.join(REPO_ROOT, "configs/demo/soco_R18_FPN_demo.yaml"),
        finetune_config=os.path.join(REPO_ROOT, "configs/demo", finetune_config),
        inits=["soco", "scratch"],
        seeds=seeds,
        demo_data={},
        proposals=(os.path.join(demo, "unlabeled"), os.path.join(demo, "proposals_unlabeled")),
        selective_search_args=["--workers", "2", "--no-progress"],
        # At this scale the pretrained box head lowers fine-tuned box AP; backbone + FPN raise
        # it (README, "make bench-transfer"). `--transfer backbone,fpn,box_head` keeps all.
        transfer=["backbone", "fpn"],
    )


# Preset name -> PipelineSpec fields; flags given on the command line override them.
PRESETS: Dict[str, Callable[[], Dict]] = {
    # `make demo`: the embedded demo, SoCo init vs scratch, one seed, 400 fine-tune iterations
    # (the whole demo fits in 20 minutes on 2 CPU cores).
    "demo": lambda: _demo_preset([0], "mask_rcnn_R18_FPN_demo.yaml"),
    # `make bench-transfer`: the same pretraining; both inits fine-tuned 800 iterations (closer
    # to convergence, half the seed spread of 400) over 3 seeds.
    "bench-transfer": lambda: _demo_preset([0, 1, 2], "mask_rcnn_R18_FPN_demo_800it.yaml"),
}
