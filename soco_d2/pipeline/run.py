"""``run_pipeline``: every stage of a :class:`~.spec.PipelineSpec`, in order, resumable.

Order: checks (names, configs, groups, checkpoint inits read without running pickled code;
nothing written) -> demo data -> the fine-tune overrides derived from the data flags -> the
labelled subset (``subset.py``, with ``train_subset``) -> no test image in a pretraining pool
(``overlap.py``) -> selective search (only if a pretraining's mapper uses proposals) -> per
pretraining: train, convert (checked against the detector it will fine-tune) -> per checkpoint
init: convert -> per seed, then per init: fine-tune, evaluate -> results, plots. With
``PipelineSpec.jobs`` N > 1 the fine-tunes run N at a time, in that order, each with
``threads // N`` threads, and each evaluation runs in this process as soon as its fine-tune
ends, one at a time, while that slot trains the next (pretrainings stay one at a time with all
``threads``, so their wall times compare).

Every stage is named per pretraining / init, so adding a pretraining or an init to a finished
run only runs the new stages. A pretraining or fine-tune whose marker was written with another
config or other overrides is an error, not a silent reuse.
"""
import json
import logging
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from soco_d2.checkpoint import GROUPS
from soco_d2.evaluation import evaluate_weights as evaluate

from .data import finetune_data_opts, pretrain_data_opts, proposals_note
from .overlap import check_test_pixels, overlap_note, pretraining_pools
from .spec import Init, PipelineSpec, is_scratch, resolve_inits
from .stages import StageRunner, run_command, run_training, stop_commands, stop_orphans
from .subset import labelled_note, train_subset_opts

__all__ = ["detector_state", "load_config", "run_pipeline", "run_units", "uses_proposals"]

logger = logging.getLogger(__name__)


def load_config(config: str, opts: Sequence[str] = ()):
    """The frozen config at ``config`` with overrides, datasets not registered.

    Raises:
        ValueError: naming the file, for an unknown key or odd overrides.
    """
    from soco_d2.checkpoint import load_detector_cfg

    return load_detector_cfg(config, opts)


def uses_proposals(cfg) -> bool:
    """Whether a pretraining config's mapper reads proposals."""
    from soco_d2.data.dataset_mappers import get_dataset_mapper_class

    return bool(get_dataset_mapper_class(cfg).uses_proposals)


def detector_state(config: str, opts: Sequence[str]) -> Dict:
    """The state dict of the detector ``config`` builds (CPU, random weights)."""
    from soco_d2.checkpoint import build_detector_state

    return build_detector_state(load_config(config, opts))


def _detector_arch(cfg) -> str:
    from soco_d2.checkpoint import infer_arch

    try:
        return infer_arch(cfg)
    except ValueError:
        # not a ResNet detector (e.g. a ViT): the layout decides, the detector check still runs
        return "auto"


def _identity(config: str, opts: Sequence[str], out: str) -> Dict:
    """What a training stage was run with; paths inside the output directory and the shipped
    configs are kept relative to them (``<output>/...``, ``<repo>/configs/...``), so a moved
    output, checkout or installation still resumes."""
    from soco_d2.model_zoo import config_dirs

    def portable(text: str) -> str:
        text = text.replace(out, "<output>")
        for d in config_dirs():
            text = text.replace(d, "<repo>/configs")
        return text

    return {"config": portable(os.path.abspath(config)), "opts": [portable(o) for o in opts]}


def _check_identity(stages: StageRunner, stage: str, identity: Dict) -> None:
    """A finished stage done with another config or overrides would be silently reused."""
    if not stages.done(stage):
        return
    done = stages.info(stage)
    for key, value in identity.items():
        before = done.get(key, value)  # markers of older versions lack the fields
        if before == value:
            continue
        if isinstance(value, list) and isinstance(before, list):
            # show where the overrides part, not two pages of them
            i = next((i for i, (a, b) in enumerate(zip(before, value)) if a != b), None)
            i = min(len(before), len(value)) if i is None else i
            before, value = before[max(i - 1, 0) : i + 2], value[max(i - 1, 0) : i + 2]
        raise ValueError(
            f"{stages.output}: stage {stage} was done with {key} {before!r}, this run gives "
            f"{value!r}; use another name or another --output"
        )


def _check_transfer(spec: PipelineSpec, stage: str, info: Dict) -> None:
    """A conversion done before with other groups would fine-tune from the wrong weights."""
    done_with = info.get("groups", list(GROUPS))
    if list(done_with) != list(spec.transfer):
        raise ValueError(
            f"{spec.output}: stage {stage} converted the groups {done_with}, this run asks for "
            f"{list(spec.transfer)}; use another --output (its fine-tunes used those weights)"
        )


def _convert(
    src: str, dst: str, arch: str, groups: Sequence[str], state: Dict, trust_pickle: bool = False
) -> Dict:
    """Convert ``src``, check it against the detector ``state``, then write ``dst``."""
    from soco_d2.checkpoint import (
        check_against_detector,
        convert_state_dict,
        load_state_dict,
        save_detectron2_weights,
    )

    weights = load_state_dict(src, trust_pickle=trust_pickle)
    result = convert_state_dict(weights, arch=arch, groups=groups)
    report = check_against_detector(result, state)  # raises before anything is written
    save_detectron2_weights(result, dst)
    return {
        "source": src,
        "layout": result.layout,
        "arch": result.arch,
        "counts": result.counts,
        "groups": list(groups),
        "loaded": report["loaded"],
        "left_at_init": {g: len(keys) for g, keys in report["missing"].items()},
    }


def _is_detectron2_dict(data) -> bool:
    return isinstance(data, dict) and "model" in data and "__author__" in data


def _check_checkpoints(inits: Sequence[Init], trust_pickle: bool) -> Set[str]:
    """Read every ``NAME=CHECKPOINT`` init once, without running pickled code (unless
    ``trust_pickle``), before any stage; return the names of those that are detectron2 weights
    (used as they are; the others are converted).

    A URL is a detectron2 model-zoo file, read from the local copy detectron2 downloads it to,
    which its fine-tunes load. Detectron2 itself unpickles a ``.pkl`` unrestricted, so a file
    used as is must pass here. With ``trust_pickle`` only ``.pkl`` files are read (to tell
    detectron2 weights apart).

    Raises:
        soco_d2.checkpoint.UntrustedCheckpointError: a file holding more than weights (unless
            ``trust_pickle``); nothing in it has run and no stage has started.
    """
    from soco_d2.checkpoint import read_checkpoint

    detectron2_weights = set()
    for init in inits:
        if init.kind != "checkpoint":
            continue
        path = init.source
        if "://" in path:
            detectron2_weights.add(init.name)
            if not trust_pickle:
                from detectron2.utils.file_io import PathManager

                read_checkpoint(PathManager.get_local_path(path))
        elif path.endswith(".pkl") or not trust_pickle:
            data = read_checkpoint(path, trust_pickle=trust_pickle)
            if path.endswith(".pkl") and _is_detectron2_dict(data):
                detectron2_weights.add(init.name)
    return detectron2_weights


def _baselines(inits: Sequence[Init]) -> Dict[str, str]:
    """Each non-scratch init -> the scratch init fine-tuned with the same detector config."""
    out = {}
    for init in inits:
        if is_scratch(init.name):
            continue
        same = [
            i.name
            for i in inits
            if is_scratch(i.name) and i.finetune_config == init.finetune_config
        ]
        if same:
            out[init.name] = "scratch" if "scratch" in same else same[0]
    return out


@dataclass
class _Run:
    """One run of a spec: its resolved inits and configs (from :func:`_check`), and what the
    steps produce for the later ones: the fine-tune overrides, the proposal cache, the detector
    weights of every init, the notes of ``results.md``."""

    spec: PipelineSpec
    inits: List[Init]
    out: str
    pretrains: Dict[str, str]  # name -> pretraining config, for the pretrainings run here
    pre_cfgs: Dict[str, object]
    ft_cfgs: Dict[str, object]
    with_proposals: Set[str]  # pretrainings whose mapper reads proposals
    detectron2_weights: Set[str]  # checkpoint inits that are detectron2 weights, used as they are
    stages: Optional[StageRunner] = None
    ft_opts: Dict[str, List[str]] = field(default_factory=dict)
    proposals: Optional[Tuple[str, str]] = None  # (image folder, cache)
    weights: Dict[str, str] = field(default_factory=dict)  # init -> detector weights ("": none)
    notes: List[str] = field(default_factory=list)
    _states: Dict[Tuple[str, Tuple[str, ...]], Dict] = field(default_factory=dict)

    @property
    def logs(self) -> str:
        return os.path.join(self.out, "logs")

    def detector(self, config: str) -> Dict:
        """The state dict of the detector fine-tune ``config`` builds (once per config)."""
        key = (config, tuple(self.ft_opts[config]))
        if key not in self._states:
            self._states[key] = detector_state(config, self.ft_opts[config])
        return self._states[key]


def run_pipeline(
    spec: PipelineSpec, inits: Optional[Sequence[Init]] = None
) -> Dict[str, Dict[str, Dict]]:
    """Run (or resume) every stage of ``spec``.

    Args:
        spec: what to run.
        inits: ``resolve_inits(spec)`` when the caller has it already (it checks the spec).

    Returns:
        ``{init: {"seed<S>": the evaluator's dict}}``, also written to ``DIR/results.json``.

    Raises:
        ValueError / FileNotFoundError: from the checks, before any stage runs (among them
            soco_d2.checkpoint.UntrustedCheckpointError, for a checkpoint init that holds more
            than weights, unless ``spec.trust_pickle``).
        RuntimeError: a failed training (with its log's tail), or another pipeline running in
            the same output directory.
        soco_d2.checkpoint.DetectorMismatchError: converted weights that do not fit the detector.
    """
    run = _check(spec, list(resolve_inits(spec) if inits is None else inits))
    _claim_output(run)
    _prepare_data(run)
    _search_proposals(run)
    _pretrain_and_convert(run)
    results = _finetune_and_evaluate(run)
    _report(run, results)
    return results


def _check(spec: PipelineSpec, inits: List[Init]) -> _Run:
    """Everything that can be checked before a stage runs; nothing is written."""
    detectron2_weights = _check_checkpoints(inits, spec.trust_pickle)
    pretrains = {i.name: i.source for i in inits if i.kind == "pretrain"}
    for name in spec.pretrains:
        if name not in pretrains:
            print(f"[pipeline] pretraining {name} is not among the inits: not run", flush=True)
    if spec.unlabeled and not os.path.isdir(spec.unlabeled):
        raise FileNotFoundError(f"--unlabeled {spec.unlabeled!r}: not a folder")
    pre_cfgs = {n: load_config(c, spec.pretrain_opts) for n, c in pretrains.items()}
    ft_configs = dict.fromkeys(i.finetune_config for i in inits)
    return _Run(
        spec=spec, inits=inits, out=os.path.abspath(spec.output), pretrains=pretrains,
        pre_cfgs=pre_cfgs, ft_cfgs={c: load_config(c, spec.finetune_opts) for c in ft_configs},
        with_proposals={n for n, cfg in pre_cfgs.items() if uses_proposals(cfg)},
        detectron2_weights=detectron2_weights,
    )


def _claim_output(run: _Run) -> None:
    """Hold the output directory (a second pipeline there is an error) and stop what a killed
    run left training in it."""
    run.stages = StageRunner(run.out)
    for what in stop_orphans(run.logs):
        print(f"[pipeline] stopped {what}: a killed run left it training", flush=True)


def _prepare_data(run: _Run) -> None:
    """The demo data (when asked), the fine-tune overrides the data flags give, the labelled
    subset of the low-label protocol, then the check that no test image is in a pool."""
    spec = run.spec
    if spec.demo_data is not None:
        run.stages.run("data", lambda: _generate_demo(spec.demo_data))
    run.ft_opts = {
        c: [*finetune_data_opts(cfg, spec.train, spec.test), *spec.finetune_opts]
        for c, cfg in run.ft_cfgs.items()
    }
    run.ft_opts, subset = train_subset_opts(spec, run.out, run.ft_opts)
    pixels = check_test_pixels(pretraining_pools(spec, run.pretrains), run.ft_opts)
    run.notes = [labelled_note(subset), overlap_note(pixels)]


def _search_proposals(run: _Run) -> None:
    """Selective search over the pretraining images, if a pretraining reads proposals."""
    spec = run.spec
    run.proposals = spec.proposals
    if run.proposals is None and spec.unlabeled:
        run.proposals = (spec.unlabeled, os.path.join(run.out, "proposals", "unlabeled.bin"))
    if run.proposals is None or not run.with_proposals:
        return
    image_dir, cache = run.proposals
    readers = [n for n in run.pretrains if n in run.with_proposals]
    if run.stages.done("proposals") and not os.path.exists(cache):
        print(f"[pipeline] proposal cache {cache} is gone: searching again", flush=True)
        os.remove(run.stages.marker("proposals"))

    def search() -> Dict:
        info = _selective_search(spec, run.proposals, run.logs)
        # a cache of another folder fails the stage here, before any pretraining reads it
        info["note"] = proposals_note(image_dir, cache, not info.get("reused"), readers)
        return info

    info = run.stages.run("proposals", search)
    # a marker written before the note existed: the note from the cache as it is now
    made_here = not info.get("reused", True)
    note = info.get("note") or proposals_note(image_dir, cache, made_here, readers)
    run.notes.append(note)


def _pretrain_and_convert(run: _Run) -> None:
    """Per init: train its pretraining (if it is one of this run's), then convert it or its
    checkpoint for the detector it fine-tunes; detectron2 weights are used as they are."""
    spec = run.spec
    for init in run.inits:
        if init.kind == "scratch":
            run.weights[init.name] = ""
            continue
        if init.kind == "pretrain":
            pre_dir = os.path.join(run.out, "pretrain", init.name)
            opts = list(spec.pretrain_opts)
            if spec.unlabeled:
                cache = run.proposals[1] if init.name in run.with_proposals else None
                opts = [*pretrain_data_opts(run.pre_cfgs[init.name], spec.unlabeled, cache), *opts]
            _train_stage(
                spec, run.stages, f"pretrain/{init.name}", init.source, pre_dir, opts,
                f"{run.logs}/pretrain_{init.name}.log",
            )
            src = os.path.join(pre_dir, "model_final.pth")
            run.weights[init.name] = os.path.join(pre_dir, "model_converted.pkl")
        elif init.name in run.detectron2_weights:
            run.weights[init.name] = init.source
            continue
        else:
            src = init.source
            run.weights[init.name] = os.path.join(run.out, "weights", f"{init.name}.pkl")
        stage = f"convert/{init.name}"
        arch = _detector_arch(run.ft_cfgs[init.finetune_config])
        info = run.stages.run(
            stage,
            lambda s=src, d=run.weights[init.name], a=arch, c=init.finetune_config: _convert(
                s, d, a, spec.transfer, run.detector(c), spec.trust_pickle
            ),
        )
        _check_transfer(spec, stage, info)


def _finetune_and_evaluate(run: _Run) -> Dict[str, Dict[str, Dict]]:
    """Every init at every seed, seed-major (a run stopped part-way has every init at the seeds
    it finished, so rerunning with fewer seeds gives a complete comparison from finished
    stages alone), ``spec.jobs`` at a time; returns the evaluations."""
    spec = run.spec
    job_threads = max(1, spec.threads // spec.jobs)

    def unit(init: Init, seed: int) -> Callable[[], Callable[[], None]]:
        """Fine-tune one init at one seed; returns its evaluation (see run_units)."""
        name = f"{init.name}_seed{seed}"
        run_dir = os.path.join(run.out, "finetune", name)
        opts = [*run.ft_opts[init.finetune_config], "SEED", str(seed)]
        train_opts = [*opts, "MODEL.WEIGHTS", run.weights[init.name], "DATASETS.TEST", "()"]

        def fine_tune() -> Callable[[], None]:
            _train_stage(
                spec, run.stages, f"finetune/{name}", init.finetune_config, run_dir, train_opts,
                f"{run.logs}/finetune_{name}.log", threads=job_threads,
            )
            return lambda: run.stages.run(
                f"evaluate/{name}",
                lambda: _evaluate_run(job_threads, init.finetune_config, opts, run_dir),
            )

        return fine_tune

    runs = [(init, seed) for seed in spec.seeds for init in run.inits]
    run_units([unit(init, seed) for init, seed in runs], spec.jobs)
    results: Dict[str, Dict[str, Dict]] = {i.name: {} for i in run.inits}
    for init, seed in runs:
        path = os.path.join(run.out, "finetune", f"{init.name}_seed{seed}", "results.json")
        with open(path) as f:
            results[init.name][f"seed{seed}"] = json.load(f)
    return results


def _report(run: _Run, results: Dict[str, Dict[str, Dict]]) -> None:
    """``results.json``, ``results.md`` and the console table, then the plots."""
    _write_results(run.spec, run.out, run.stages, run.inits, results, run.notes)
    if run.spec.plots:
        first = run.inits[0].finetune_config
        _plot(run.spec, run.out, run.inits, first, run.ft_opts[first], list(run.pretrains))


def run_units(units: Sequence[Callable[[], Optional[Callable[[], None]]]], jobs: int) -> None:
    """Run ``units`` in order, ``jobs`` at a time, each in a thread that waits on its command.

    What a unit returns, if callable, runs after it in a lane of its own, one at a
    time: a fine-tune returns its evaluation, which runs in this process while the fine-tune's
    slot already trains the next unit. With ``jobs`` 1 everything runs in order in this thread.

    After a unit or a follow-up fails no new unit starts; the running ones and their
    follow-ups finish (their work is kept), then the first error is raised. An interruption of
    this thread (Ctrl-C, SIGTERM after ``exit_on_sigterm``) stops every running command first.
    """
    if jobs <= 1:
        for unit in units:
            then = unit()
            if callable(then):
                then()
        return
    pending = list(units)
    active, lane_active = set(), set()
    errors: List[BaseException] = []
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="pipeline-job") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-lane") as lane:
        try:
            while True:
                while pending and len(active) < jobs and not errors:
                    active.add(pool.submit(pending.pop(0)))
                if not (active or lane_active):
                    break
                finished, _ = wait(active | lane_active, return_when=FIRST_COMPLETED)
                for future in finished:
                    was_unit = future in active
                    active.discard(future)
                    lane_active.discard(future)
                    if future.exception() is not None:
                        errors.append(future.exception())
                    elif was_unit and callable(future.result()):
                        lane_active.add(lane.submit(future.result()))
        except BaseException:
            stop_commands()  # the waiting threads' commands fail, and the threads end
            for executor in (pool, lane):  # nothing queued starts; leaving waits for the rest
                executor.shutdown(wait=False, cancel_futures=True)
            raise
    if errors:
        raise errors[0]


def _train_stage(
    spec: PipelineSpec, stages: StageRunner, stage: str, config: str, output_dir: str,
    opts: List[str], log_path: str, threads: Optional[int] = None,
) -> Dict:
    identity = _identity(config, opts, stages.output)
    _check_identity(stages, stage, identity)
    threads = spec.threads if threads is None else threads

    def train() -> Dict:
        # a trusted checkpoint init is read unrestricted by the fine-tune too
        launch = [*spec.launch_args, *(["--trust-pickle"] if spec.trust_pickle else [])]
        run_training(config, output_dir, opts, log_path, threads, launch_args=launch)
        return identity

    return stages.run(stage, train)


def _shown(path: str) -> str:
    """A shipped config as ``configs/<relative path>`` (as a reader would type it), else
    ``path``."""
    from soco_d2.model_zoo import shipped_config_name

    return shipped_config_name(path) or path


def _write_results(
    spec: PipelineSpec, out: str, stages: StageRunner, inits: Sequence[Init], results: Dict,
    notes: Sequence[str] = (),
) -> None:
    from soco_d2.utils.io import atomic_write, write_json_atomic
    from soco_d2.utils.results import format_console, results_table

    write_json_atomic(results, os.path.join(out, "results.json"))
    detectors = {i.name: os.path.basename(i.finetune_config) for i in inits}
    if len(set(detectors.values())) < 2:
        detectors = None  # one detector: the header names it, a column would repeat it
    seconds = {i.name: stages.seconds(f"pretrain/{i.name}") for i in inits if i.kind == "pretrain"}
    baselines = _baselines(inits)
    table = results_table(
        results, baselines=baselines, pretrain_seconds=seconds, detectors=detectors
    )
    configs = ", ".join(
        f"`{_shown(c)}`" for c in dict.fromkeys(i.finetune_config for i in inits)
    )
    with atomic_write(os.path.join(out, "results.md"), "w") as f:
        f.write(f"# Transfer results\n\nFine-tune configs: {configs}\n\n")
        f.write("".join(f"{note}\n\n" for note in notes) + table)
    print(format_console(results, baselines=baselines), flush=True)


def _generate_demo(kwargs: Dict) -> Dict:
    from soco_d2.data.datasets import datasets_root
    from soco_d2.data.demo import generate_demo_dataset

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


def _selective_search(spec: PipelineSpec, proposals: Tuple[str, str], logs: str) -> Dict:
    image_dir, cache = proposals
    if os.path.exists(cache):
        return {"cache": cache, "reused": True}
    cmd = [sys.executable, "-m", "soco_d2.tools.selective_search"]
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


def _evaluate_run(threads: int, config: str, opts: Sequence[str], run_dir: str) -> Dict:
    import torch

    from soco_d2.utils.io import write_json_atomic

    torch.set_num_threads(threads)
    weights = os.path.join(run_dir, "model_final.pth")
    results = evaluate(config, opts, weights, run_dir)
    write_json_atomic(results, os.path.join(run_dir, "results.json"))
    return {"tasks": sorted(results)}


def _plot(
    spec: PipelineSpec, out: str, inits: Sequence[Init], config: str, opts: Sequence[str],
    pretrains: Sequence[str],
) -> None:
    """Best effort: a failed plot is logged, never fails a finished pipeline."""
    try:
        from .plots import plot_pipeline

        plot_pipeline(
            out, [i.name for i in inits], spec.seeds, config, opts, pretrains=pretrains,
            grid_inits=[i.name for i in inits if i.finetune_config == config],
        )
    except Exception as e:  # plots are a convenience; results are already written
        logger.warning("plotting failed: %r", e)
        print(f"[pipeline] plotting failed: {e!r}", flush=True)
