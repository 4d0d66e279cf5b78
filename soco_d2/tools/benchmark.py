#!/usr/bin/env python
"""Benchmark the training steps of any pretraining method against its own floor.

Usage:
    tools/benchmark.py --config-file configs/pretrain/soco_R50_FPN_100ep.yaml \\
        [--iters 3 --warmup 1 --batch 8] [--threads N] [--amp off|fp16|bf16] \\
        [--channels-last] [--compare] [KEY VALUE ...]

Inputs are the config's mapper outputs on synthetic 500x375 images (no dataset, no disk;
soco_d2/engine/benchmark.py). Prints images/s, seconds per iteration split into forward /
backward / optimizer(+EMA), the method's floor (its unavoidable backbone passes, from the
model's ``floor()``) with step/floor, and peak memory (RSS on CPU, max_memory_allocated on
CUDA). The last line is one JSON object. ``--compare`` (SoCo only) runs MODEL.SOCO.ASSIGNMENT
"level" and "all_levels" (the official formulation) each in a fresh process (peak RSS is
process-lifetime) and reports the speed ratio.
"""
import argparse
import json
import os
import subprocess
import sys

import torch

AMP = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--iters", type=int, default=3, help="measured iterations")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured iterations first")
    p.add_argument("--batch", type=int, default=8, help="images per iteration")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--device", default="", help="cpu / cuda (default: cuda if available)")
    p.add_argument("--amp", choices=sorted(AMP), default="off", help="autocast dtype (CUDA)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    p.add_argument("--compare", action="store_true", help="level vs all_levels, side by side")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def _compare(args) -> dict:
    results = {}
    for mode in ("level", "all_levels"):
        argv = [a for a in sys.argv[1:] if a != "--compare"] + ["MODEL.SOCO.ASSIGNMENT", mode]
        proc = subprocess.run(
            [sys.executable, "-m", "soco_d2.tools.benchmark"] + argv,
            stdout=subprocess.PIPE, text=True, check=True,
        )
        lines = proc.stdout.strip().splitlines()
        print("\n".join(f"[{mode}] {line}" for line in lines[:-1]), flush=True)
        results[mode] = json.loads(lines[-1])
    out = dict(results["level"])
    out["compare"] = results
    out["speedup_level_vs_all_levels"] = (
        results["level"]["images_per_s"] / results["all_levels"]["images_per_s"]
    )
    print(f"level vs all_levels: {out['speedup_level_vs_all_levels']:.2f}x images/s, peak "
          f"{results['level']['peak_mem_gib']:.2f} vs {results['all_levels']['peak_mem_gib']:.2f}"
          " GiB")
    return out


def run(argv=None) -> dict:
    """Measure as the command line ``argv`` says; returns the result it prints last (JSON)."""
    args = parse_args(argv)
    if args.compare:
        out = _compare(args)
        print(json.dumps(out))
        return out
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    import soco_d2  # noqa: F401  (registers SoCo)
    from soco_d2.engine import load_cfg
    from soco_d2.engine.benchmark import benchmark_training

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = list(args.opts) + [
        "SOLVER.IMS_PER_BATCH", str(args.batch), "MODEL.DEVICE", device,
    ]
    if args.channels_last:
        opts += ["MODEL.SSL.CHANNELS_LAST", "True"]
    # The schedule is irrelevant here: a nominal dataset size satisfies SOLVER.EPOCHS.
    cfg = load_cfg(args.config_file, opts, num_train_images=1_281_167, register=False)
    res = benchmark_training(
        cfg, iters=args.iters, warmup=args.warmup, amp_dtype=AMP[args.amp],
        measure_floor=not args.no_floor,
    )
    res.update(
        config=args.config_file, device=device, batch=args.batch, iters=args.iters,
        threads=torch.get_num_threads(), amp=args.amp, channels_last=args.channels_last,
        method=cfg.MODEL.META_ARCHITECTURE, torch=torch.__version__,
        peak_mem_kind="max_memory_allocated" if device.startswith("cuda") else "peak_rss",
    )
    print(
        f"{res['images_per_s']:.3f} images/s, {res['s_per_iter']:.3f} s/iter "
        f"(forward {res['forward_s']:.3f}, backward "
        f"{res['backward_s']:.3f}, optimizer+EMA {res['optimizer_s']:.3f}); peak "
        f"{res['peak_mem_gib']:.2f} GiB ({res['peak_mem_kind']})"
    )
    if "floor_s_per_iter" in res:
        print(f"floor {res['floor_s_per_iter']:.3f} s/iter; step/floor "
              f"{res['step_over_floor']:.3f}; outside-floor share "
              f"{100 * res['outside_backbone_share']:.1f}%")
    print(json.dumps(res), flush=True)
    return res


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
