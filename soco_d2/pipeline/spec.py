"""What a pipeline run is asked to do, and the checks that run before any stage.

Inits (``PipelineSpec.inits``), one fine-tune per init and seed:

- ``scratch`` (or ``scratch_<tag>`` / ``scratch-<tag>``, one per detector family): MODEL.WEIGHTS
  ``""``, random initialisation;
- ``NAME``: the pretraining ``PipelineSpec.pretrains[NAME]`` of this run, converted;
- ``NAME=CHECKPOINT``: a pretraining checkpoint converted with ``soco_d2.checkpoint``, or
  detectron2 weights (a ``.pkl`` with ``__author__``, or a ``detectron2://`` / ``https://`` URL)
  used as they are. Each is read without running pickled code (``soco_d2.checkpoint.load``)
  before any stage; ``PipelineSpec.trust_pickle`` reads one that needs more.

Names are ``[A-Za-z0-9_-]+``; a name means one thing per run (a pretraining, a checkpoint or
random weights), so every clash is an error raised by :func:`resolve_inits` before any stage.
"""
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from soco_d2.checkpoint import GROUPS, check_groups

__all__ = [
    "Init",
    "PipelineSpec",
    "is_scratch",
    "parse_init",
    "parse_named",
    "resolve_inits",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_URL_PREFIXES = ("detectron2://", "http://", "https://", "manifold://")


@dataclass
class PipelineSpec:
    """Everything a pipeline run needs.

    Attributes:
        output: output directory DIR.
        pretrains: pretraining NAME -> YAML config; each runs in ``DIR/pretrain/NAME``.
        finetune_config: the detector YAML every init is fine-tuned with by default.
        finetune_configs: init NAME -> its own detector YAML (e.g. a ViT detector for a ViT
            pretraining); inits not listed use ``finetune_config``.
        inits: see this module's docstring; empty = every pretraining, then ``scratch``.
        seeds: fine-tune seeds (each init is fine-tuned once per seed).
        pretrain_opts / finetune_opts: ``KEY VALUE`` overrides of every pretraining / every
            fine-tune config, applied after the ones the pipeline derives from the data flags.
        unlabeled: image folder every pretraining trains on (registered as a folder dataset).
        train / test: fine-tune train / test set: a registered dataset name, or a registration
            spec ``coco:JSON:IMAGES`` / ``voc:DIR:SPLIT[:CLASS1,CLASS2,...]``.
        train_subset: the low-label protocol (``--train-subset``): every fine-tune trains on N
            images (an integer >= 1, or its string) or a fraction in (0, 1] of the train set,
            one subset for every init and seed (soco_d2/pipeline/subset.py); None: all of it.
        subset_seed: the seed that draws that subset (``--subset-seed``), not a fine-tune seed.
        demo_data: keyword arguments of ``generate_demo_dataset`` (None: no data stage).
        proposals: ``(image dir, cache path)`` for selective search (None: none, or the one
            ``unlabeled`` implies); it runs only when a pretraining's mapper uses proposals.
        selective_search_args: extra flags of ``soco_d2.tools.selective_search``.
        transfer: the groups of ``soco_d2.checkpoint.GROUPS`` the conversions keep (a group a
            checkpoint does not have is left at its initialisation, not an error).
        launch_args: detectron2 launch flags passed to every training (``--num-gpus N
            --num-machines M --machine-rank R --dist-url URL``).
        threads: CPU threads the pipeline uses: each training subprocess and the in-process
            evaluation get them all, except the fine-tunes when ``jobs`` > 1.
        jobs: fine-tunes (each followed by its evaluation) run this many at a time, with
            ``threads // jobs`` threads each. On a small CPU machine two single-thread
            fine-tunes finish sooner than two one after another with two threads each
            (docs/benchmarks.md). Above 1 it excludes ``launch_args`` (each training would
            take every device).
        plots: draw PNG plots at the end.
        trust_pickle: read ``NAME=CHECKPOINT`` files with unrestricted unpickling, which runs
            any code a file names (``--trust-pickle``); by default a file holding more than
            weights is refused before any stage.
    """

    output: str
    pretrains: Dict[str, str] = field(default_factory=dict)
    finetune_config: str = ""
    finetune_configs: Dict[str, str] = field(default_factory=dict)
    inits: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    pretrain_opts: List[str] = field(default_factory=list)
    finetune_opts: List[str] = field(default_factory=list)
    unlabeled: Optional[str] = None
    train: Optional[str] = None
    test: Optional[str] = None
    train_subset: Optional[Union[int, float, str]] = None
    subset_seed: int = 0
    demo_data: Optional[Dict] = None
    proposals: Optional[Tuple[str, str]] = None
    selective_search_args: List[str] = field(default_factory=list)
    transfer: List[str] = field(default_factory=lambda: list(GROUPS))
    launch_args: List[str] = field(default_factory=list)
    threads: int = 2
    jobs: int = 1
    plots: bool = True
    trust_pickle: bool = False


class Init(NamedTuple):
    """One resolved init: ``kind`` is "scratch", "pretrain" or "checkpoint"; ``source`` is the
    pretraining config or the checkpoint path ("" for scratch); ``finetune_config`` is the
    detector it is fine-tuned with."""

    name: str
    kind: str
    source: str
    finetune_config: str


def is_scratch(name: str) -> bool:
    """``scratch``, ``scratch_vit``, ``scratch-c4``: random initialisation."""
    return name == "scratch" or name.startswith(("scratch_", "scratch-"))


def _check_name(name: str, what: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"{what}: name {name!r} must match [A-Za-z0-9_-]+")
    return name


def parse_named(text: str, what: str) -> Tuple[str, str]:
    """``"NAME=VALUE"`` -> ``(NAME, VALUE)``, both non-empty, NAME checked.

    Args:
        text: e.g. ``"mocov2=configs/demo/mocov2_R18_demo.yaml"``.
        what: the flag, for messages (``"--pretrain"``).
    """
    name, sep, value = text.partition("=")
    if not sep or not value.strip():
        raise ValueError(f"{what}: expected NAME=VALUE, got {text!r}")
    return _check_name(name.strip(), what), value.strip()


def parse_init(init: str) -> Tuple[str, Optional[str]]:
    """``"soco"`` -> ("soco", None); ``"moco=/w/moco.pth"`` -> ("moco", "/w/moco.pth")."""
    if "=" in init:
        return parse_named(init, "--inits")
    return _check_name(init.strip(), "--inits"), None


def _pairs(opts: Sequence[str], what: str) -> None:
    if len(opts) % 2:
        raise ValueError(f"{what}: overrides must be KEY VALUE pairs, got {list(opts)}")


def _require_file(path: str, what: str) -> None:
    if not path:
        raise ValueError(f"{what}: no config given")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: config file {path!r} does not exist")


def resolve_inits(spec: PipelineSpec) -> List[Init]:
    """Check ``spec`` and resolve its inits; nothing runs and nothing is written.

    Returns:
        one :class:`Init` per init, in order.

    Raises:
        ValueError / FileNotFoundError: bad names, clashes (a name that is a pretraining and a
            checkpoint, a bare name with no pretraining, a pretraining named ``scratch``),
            duplicates, missing configs or checkpoints, odd overrides, no seeds, bad groups.
    """
    check_groups(spec.transfer)
    _pairs(spec.pretrain_opts, "pretrain opts")
    _pairs(spec.finetune_opts, "finetune opts")
    if not spec.seeds:
        raise ValueError("seeds: at least one fine-tune seed is needed")
    if spec.train_subset is not None:
        from .subset import parse_subset

        parse_subset(spec.train_subset)
    if spec.threads < 1 or spec.jobs < 1:
        raise ValueError(f"threads ({spec.threads}) and jobs ({spec.jobs}) must be at least 1")
    if spec.jobs > 1 and spec.launch_args:
        raise ValueError(
            f"jobs {spec.jobs}: trainings side by side share this machine's CPU cores; with "
            f"launch flags ({' '.join(spec.launch_args)}) each training takes every device, so "
            "run them one at a time (--jobs 1)"
        )
    for name, config in spec.pretrains.items():
        _check_name(name, "--pretrain")
        if is_scratch(name):
            raise ValueError(
                f"--pretrain {name}=...: names scratch, scratch_* and scratch-* mean random "
                "initialisation; pick another name"
            )
        _require_file(config, f"--pretrain {name}")
    names = list(spec.inits) or [*spec.pretrains, "scratch"]
    out: List[Init] = []
    for text in names:
        name, path = parse_init(text)
        if any(i.name == name for i in out):
            raise ValueError(f"--inits: {name!r} is given twice")
        if path is not None:
            if name in spec.pretrains or is_scratch(name):
                what = "a pretraining of this run" if name in spec.pretrains else "random weights"
                raise ValueError(
                    f"--inits {name}={path}: {name!r} already names {what}; give the checkpoint "
                    "another name"
                )
            if not path.startswith(_URL_PREFIXES) and not os.path.isfile(path):
                raise FileNotFoundError(f"--inits {name}={path}: checkpoint not found")
            kind, source = "checkpoint", path
        elif is_scratch(name):
            kind, source = "scratch", ""
        elif name in spec.pretrains:
            kind, source = "pretrain", spec.pretrains[name]
        else:
            known = ", ".join(spec.pretrains) or "none"
            raise ValueError(
                f"--inits {name}: no pretraining is named {name!r} (pretrainings: {known}); give "
                f"--pretrain {name}=CONFIG, a checkpoint as {name}=PATH, or a --preset that "
                "defines it"
            )
        finetune = spec.finetune_configs.get(name, spec.finetune_config)
        _require_file(finetune, f"fine-tune config of init {name}")
        out.append(Init(name, kind, source, finetune))
    return out
