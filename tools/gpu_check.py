#!/usr/bin/env python
"""One-device GPU check: CUDA-only tests, SoCo speed and memory, a short detector fine-tune.

Usage:
    tools/gpu_check.py [--budget-s 480] [--out result.json]     # on one CUDA device
    tools/gpu_check.py --dry-run           # CPU: tiny config, batch 2, 1 iteration, 4 images

Steps, each a subprocess with its own time limit inside the overall budget (a failed or
timed-out step is recorded, the others still run):
1. ``cuda_tests``: the tests that only run with CUDA (a ``cuda`` marker, or a ``skipif`` whose
   reason or condition names CUDA/GPU), collected from ``tests/``.
2. ``benchmark``: ``tools/benchmark.py`` on SoCo R50-FPN (configs/pretrain/soco_R50_FPN_100ep.yaml)
   at batch 64 and 128, bf16 and fp16, channels_last: images/s, step/floor, peak memory;
   ``fits`` is False when the run ran out of memory.
3. ``finetune``: a 50-iteration Mask R-CNN R50-FPN fine-tune (AMP bf16) on freshly generated
   demo data (soco_d2/data/demo.py), then its COCO evaluation (box and mask AP).

The last line printed is one JSON object with every step's result.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCO_R50 = os.path.join(REPO, "configs/pretrain/soco_R50_FPN_100ep.yaml")
SOCO_TINY = os.path.join(REPO, "configs/pretrain/soco_R18_FPN_tiny.yaml")
DEMO_FT = os.path.join(REPO, "configs/demo/mask_rcnn_R18_FPN_demo.yaml")
OOM_MARKERS = ("out of memory", "OutOfMemoryError")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, 1 iteration")
    p.add_argument("--budget-s", type=float, default=480.0, help="overall time limit (s)")
    p.add_argument("--out", default="", help="also write the JSON result to this file")
    p.add_argument("--skip", nargs="*", default=[], choices=["cuda_tests", "benchmark", "finetune"])
    p.add_argument("--run-cuda-tests", metavar="REPORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _run(cmd: List[str], timeout: float, env: Optional[Dict] = None) -> Dict:
    """Run ``cmd``; returns rc (None on timeout), seconds and the output's tail."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=max(1.0, timeout),
        )
        rc, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        rc, out = None, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else e.stdout
    return {"rc": rc, "seconds": round(time.monotonic() - start, 1), "output": out or ""}


class _CudaOnly:
    """pytest plugin: keep the tests marked ``cuda`` or skipped-without-CUDA; count outcomes."""

    def __init__(self):
        self.counts = {"passed": 0, "failed": 0, "skipped": 0, "selected": 0}
        self.failed: List[str] = []

    @staticmethod
    def _needs_cuda(item) -> bool:
        if item.get_closest_marker("cuda") is not None:
            return True
        for mark in item.iter_markers("skipif"):
            text = " ".join(map(str, mark.args)) + " " + str(mark.kwargs.get("reason", ""))
            if "cuda" in text.lower() or "gpu" in text.lower():
                return True
        return False

    def pytest_collection_modifyitems(self, config, items):
        items[:] = [i for i in items if self._needs_cuda(i)]
        self.counts["selected"] = len(items)

    def pytest_runtest_logreport(self, report):
        if report.failed:  # in setup, call or teardown
            self.counts["failed"] += 1
            self.failed.append(report.nodeid)
        elif report.skipped:
            self.counts["skipped"] += 1
        elif report.when == "call":
            self.counts["passed"] += 1


def run_cuda_tests(report_path: str) -> int:
    """In-process pytest over ``tests/`` with only CUDA tests selected; writes the counts."""
    import pytest

    plugin = _CudaOnly()
    rc = pytest.main(
        ["-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
         os.path.join(REPO, "tests")],
        plugins=[plugin],
    )
    with open(report_path, "w") as f:
        json.dump(dict(plugin.counts, failed_tests=plugin.failed, rc=int(rc)), f)
    return 0


def cuda_tests(timeout: float) -> Dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        res = _run([sys.executable, os.path.abspath(__file__), "--run-cuda-tests", report],
                   timeout)
        out = {"seconds": res["seconds"], "timed_out": res["rc"] is None}
        if os.path.isfile(report):
            with open(report) as f:
                out.update(json.load(f))
        else:
            out["error"] = res["output"][-2000:]
        return out


def benchmark(dry_run: bool, batch: int, amp: str, timeout: float) -> Dict:
    cmd = [sys.executable, os.path.join(REPO, "tools", "benchmark.py"),
           "--config-file", SOCO_TINY if dry_run else SOCO_R50, "--batch", str(batch),
           "--amp", amp, "--channels-last"]
    cmd += (["--iters", "1", "--warmup", "0", "--device", "cpu", "--threads", "1"] if dry_run
            else ["--iters", "5"])
    res = _run(cmd, timeout)
    row = {"batch": batch, "amp": amp, "channels_last": True, "seconds": res["seconds"]}
    lines = res["output"].strip().splitlines()
    if res["rc"] == 0 and lines:
        full = json.loads(lines[-1])
        keep = ("images_per_s", "s_per_iter", "floor_s_per_iter", "step_over_floor",
                "peak_mem_gib", "peak_mem_kind", "device")
        row.update({k: full[k] for k in keep if k in full}, fits=True)
    elif any(m in res["output"] for m in OOM_MARKERS):
        row.update(fits=False, error="out of memory")
    else:
        row.update(fits=None, error=("timed out" if res["rc"] is None else
                                     res["output"][-1500:]))
    return row


def finetune(dry_run: bool, timeout: float) -> Dict:
    """The demo fine-tune on a generated dataset, in a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_ft_") as tmp:
        return _finetune_in(tmp, dry_run, timeout)


def _finetune_in(tmp: str, dry_run: bool, timeout: float) -> Dict:
    from soco_d2.data.demo import generate_demo_dataset

    root = os.path.join(tmp, "demo")
    size = 96 if dry_run else 160
    n_train, n_val = (4, 4) if dry_run else (120, 120)
    generate_demo_dataset(root, num_unlabeled=0, num_train=n_train, num_val=n_val,
                          image_size=size, seed=0)
    ann = os.path.join(root, "annotations")
    iters = 1 if dry_run else 50
    opts = [
        "DATASETS.SSL.REGISTER",
        f"('gpu_check_train=coco:{ann}/instances_train.json:{root}/train',"
        f"'gpu_check_val=coco:{ann}/instances_val.json:{root}/val')",
        "DATASETS.TRAIN", "('gpu_check_train',)", "DATASETS.TEST", "('gpu_check_val',)",
        "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", str(min(10, iters)), "SOLVER.CHECKPOINT_PERIOD", "100000",
        "OUTPUT_DIR", os.path.join(tmp, "out"),
    ]
    if dry_run:
        opts += ["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
                 "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(size),
                 "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(size),
                 "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32",
                 "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32"]
    else:  # R50-FPN at the transfer protocol's widths, AMP bf16 on the device
        opts += ["MODEL.DEVICE", "cuda", "SOLVER.IMS_PER_BATCH", "16",
                 "DATALOADER.NUM_WORKERS", "4", "MODEL.RESNETS.DEPTH", "50",
                 "MODEL.RESNETS.RES2_OUT_CHANNELS", "256", "MODEL.FPN.OUT_CHANNELS", "256",
                 "MODEL.ROI_BOX_HEAD.CONV_DIM", "256", "MODEL.ROI_BOX_HEAD.FC_DIM", "1024",
                 "MODEL.ROI_MASK_HEAD.CONV_DIM", "256", "SOLVER.AMP.ENABLED", "True",
                 "SOLVER.AMP.DTYPE", "bfloat16"]
    res = _run([sys.executable, os.path.join(REPO, "tools", "train_net.py"),
                "--config-file", DEMO_FT, *opts], timeout)
    out = {"iters": iters, "seconds": res["seconds"], "rc": res["rc"]}
    metrics = os.path.join(tmp, "out", "metrics.json")
    if res["rc"] == 0 and os.path.isfile(metrics):
        with open(metrics) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        last = rows[-1]
        out.update({k: last.get(k) for k in ("bbox/AP", "bbox/AP50", "segm/AP")})
        times = [r["time"] for r in rows if "time" in r]
        if times:
            out["s_per_iter"] = times[-1]
    else:
        out["error"] = "timed out" if res["rc"] is None else res["output"][-1500:]
    return out


def main(argv=None) -> Dict:
    args = parse_args(argv)
    if args.run_cuda_tests:
        return run_cuda_tests(args.run_cuda_tests)
    import torch

    start = time.monotonic()

    def left(cap: float) -> float:
        return min(cap, args.budget_s - (time.monotonic() - start))

    result: Dict = {
        "dry_run": args.dry_run, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("tools/gpu_check.py needs a CUDA device; use --dry-run on CPU")
    if "cuda_tests" not in args.skip:
        result["cuda_tests"] = cuda_tests(left(120))
    if "benchmark" not in args.skip:
        batches = (2,) if args.dry_run else (64, 128)
        result["benchmark"] = []
        for amp in ("bf16", "fp16"):
            for batch in batches:
                if left(90) < 5:
                    result["benchmark"].append({"batch": batch, "amp": amp, "error": "no time"})
                    continue
                result["benchmark"].append(benchmark(args.dry_run, batch, amp, left(90)))
    if "finetune" not in args.skip:
        result["finetune"] = finetune(args.dry_run, left(240)) if left(240) > 10 else {
            "error": "no time"}
    result["wall_s"] = round(time.monotonic() - start, 1)
    line = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
