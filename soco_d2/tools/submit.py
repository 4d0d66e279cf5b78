#!/usr/bin/env python
"""Submit a training, the whole pipeline or sharded selective search to SLURM (submitit).

    soco-d2-submit [JOB OPTIONS] train --config-file CONFIG [--resume] [KEY VALUE ...]
    soco-d2-submit [JOB OPTIONS] pipeline --output DIR [PIPELINE ARGUMENTS ...]
    soco-d2-submit [JOB OPTIONS] selective-search --shards N --input DIR --output CACHE [...]

JOB OPTIONS come before the command: --nodes, --gpus-per-node, --tasks-per-node,
--cpus-per-task, --mem-gb, --partition, --time (minutes), --job-name, --folder (submitit's logs
and pickles; %j is the job id), --cluster (slurm, local, debug; default: slurm where sbatch
exists, else local), --signal-delay-s, --max-timeouts, --slurm-param KEY=VALUE (any sbatch
option), --wait. Everything after the command goes to tools/<command>.py unchanged.

- train: one task per GPU (--tasks-per-node defaults to --gpus-per-node, at least 1); the
  nodes x tasks processes join one process group as under torchrun (soco_d2/engine/slurm.py).
  Give process counts here, not --num-gpus / --num-machines to train_net (a one-task job may
  still use --num-gpus: launch then spawns the processes inside the task).
- pipeline: one task on one node (pass --num-gpus to the pipeline for its trainings).
- selective-search: a job array, shard I of N writing CACHE.shard-I-of-N, then one merge into
  CACHE: on SLURM a job that starts when every shard has succeeded (afterok), otherwise (or
  with --wait) in this process once the shards are done.

On preemption or time-out a job requeues itself (up to --max-timeouts time-outs; preemptions
do not count) and continues: train with --resume, the others by rerunning the same command.
Prints one JSON line per job (job_id, command, stdout); with --wait, also the results, and exits
non-zero if a job failed.
"""
import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Optional, Sequence

import submitit

from soco_d2.data.proposals import merge_runs
from soco_d2.engine.slurm import ToolJob

COMMANDS = {"train": "train_net", "pipeline": "pipeline", "selective-search": "selective_search"}
# train_net's process-count flags: with several tasks the counts are the job's
_LAUNCH_FLAGS = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", choices=("slurm", "local", "debug"),
                   help="default: slurm where sbatch exists, else local")
    p.add_argument("--folder", default=os.path.join("submitit", "%j"),
                   help="submitit's logs and pickles (%%j: job id)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--tasks-per-node", type=int, help="default: --gpus-per-node, at least 1")
    p.add_argument("--cpus-per-task", type=int, help="also the child's OMP_NUM_THREADS")
    p.add_argument("--mem-gb", type=float)
    p.add_argument("--partition")
    p.add_argument("--time", type=int, default=60, help="time limit, minutes")
    p.add_argument("--job-name", help="default: soco_d2_<command>")
    p.add_argument("--signal-delay-s", type=int, default=120,
                   help="SLURM sends SIGUSR2 this long before the time limit")
    p.add_argument("--max-timeouts", type=int, default=3, help="requeues after time-outs")
    p.add_argument("--array-parallelism", type=int, default=256, help="shards running at once")
    p.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option, e.g. account=ABC or constraint=volta32gb")
    p.add_argument("--wait", action="store_true", help="wait for the jobs and print results")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("train", "pipeline"):
        sub.add_parser(name, add_help=False, allow_abbrev=False,
                       help=f"tools/{COMMANDS[name]}.py ARGS")
    ss = sub.add_parser("selective-search", add_help=False, allow_abbrev=False,
                        help="tools/selective_search.py ARGS, as N shards and a merge")
    ss.add_argument("--shards", type=int, required=True, help="N: array jobs")
    ss.add_argument("--output", required=True, help="the merged cache")
    return p


def shard_path(output: str, index: int, count: int) -> str:
    """The cache that shard ``index`` of ``count`` writes."""
    return f"{output}.shard-{index}-of-{count}"


def _slurm_params(pairs: Sequence[str]) -> Dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-param wants KEY=VALUE, got {pair!r}")
        out[key.replace("-", "_")] = value
    return out


def make_executor(args, tasks_per_node: int = 1, gpus_per_node: int = 0, nodes: int = 1,
                  name: Optional[str] = None, extra: Optional[Dict[str, str]] = None):
    """A submitit ``AutoExecutor`` with the job options of ``args`` (and ``extra`` sbatch
    options)."""
    cluster = args.cluster or ("slurm" if shutil.which("sbatch") else "local")
    ex = submitit.AutoExecutor(folder=args.folder, cluster=cluster,
                               slurm_max_num_timeout=args.max_timeouts,
                               local_max_num_timeout=args.max_timeouts)
    params = dict(timeout_min=args.time, nodes=nodes, tasks_per_node=tasks_per_node,
                  gpus_per_node=gpus_per_node, name=name or f"soco_d2_{args.command}",
                  slurm_signal_delay_s=args.signal_delay_s,
                  slurm_array_parallelism=args.array_parallelism)
    if args.cpus_per_task:
        params["cpus_per_task"] = args.cpus_per_task
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.partition:
        params["slurm_partition"] = args.partition
    sbatch = {**_slurm_params(args.slurm_param), **(extra or {})}
    if sbatch:
        params["slurm_additional_parameters"] = sbatch
    ex.update_parameters(**{k: v for k, v in params.items()
                            if cluster == "slurm" or not k.startswith("slurm_")})
    return ex


def _report(job, command: str) -> None:
    print(json.dumps({"job_id": job.job_id, "command": command,
                      "stdout": str(job.paths.stdout)}), flush=True)


def submit(args, rest: List[str]) -> List:
    """Submit what ``args.command`` asks for; returns the submitted jobs."""
    name = args.job_name
    if args.command == "train":
        tasks = args.tasks_per_node or max(1, args.gpus_per_node)
        if tasks * args.nodes > 1 and any(a.split("=")[0] in _LAUNCH_FLAGS for a in rest):
            raise ValueError(f"give the process counts to soco-d2-submit (--nodes, "
                             f"--gpus-per-node, --tasks-per-node), not {'/'.join(_LAUNCH_FLAGS)}")
        ex = make_executor(args, tasks, args.gpus_per_node, args.nodes, name)
        job = ex.submit(ToolJob("train_net", rest, distributed=tasks * args.nodes > 1,
                                resume_arg="--resume", threads=args.cpus_per_task))
        _report(job, "train")
        return [job]
    if args.command == "pipeline":
        if args.nodes != 1 or (args.tasks_per_node or 1) != 1:
            raise ValueError("the pipeline runs as one task on one node; give --num-gpus to the "
                             "pipeline for its trainings")
        ex = make_executor(args, 1, args.gpus_per_node, 1, name)
        job = ex.submit(ToolJob("pipeline", rest, threads=args.cpus_per_task))
        _report(job, "pipeline")
        return [job]
    n = args.shards
    if n < 1 or any(a == "--shard" or a.startswith("--shard=") for a in rest):
        raise ValueError("--shards N (>= 1) makes the shards; do not give --shard")
    if args.cpus_per_task and "--workers" not in rest:
        rest = [*rest, "--workers", str(args.cpus_per_task)]
    parts = [shard_path(args.output, i, n) for i in range(n)]
    ex = make_executor(args, name=name)
    with ex.batch():
        jobs = [ex.submit(ToolJob("selective_search",
                                  [*rest, "--shard", f"{i}/{n}", "--output", parts[i]]))
                for i in range(n)]
    for job in jobs:
        _report(job, "selective-search shard")
    if ex.cluster == "slurm" and not args.wait:
        merge = ToolJob("selective_search", ["--merge", *parts, "--output", args.output])
        array_id = jobs[0].job_id.split("_")[0]
        dep = make_executor(args, name=f"{name or 'soco_d2_selective-search'}_merge",
                            extra={"dependency": f"afterok:{array_id}"})
        job = dep.submit(merge)
        _report(job, "selective-search merge")
        return [*jobs, job]
    for job in jobs:
        job.result()  # raises if a shard failed
    summary = merge_runs(args.output, parts)
    print(json.dumps({"command": "selective-search merge", "result": summary}), flush=True)
    return jobs


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = get_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        jobs = submit(args, rest)
    except ValueError as e:
        parser.error(str(e))
    if not args.wait:
        return 0
    status = 0
    for job in jobs:
        try:
            result = job.results()
        except Exception as e:  # a failed job: submitit's error names the task's traceback
            status, result = 1, f"{type(e).__name__}: {e}"
        print(json.dumps({"job_id": job.job_id, "result": result}, default=str), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
