"""tools/gpu_check.py --dry-run: every step of the GPU check runs on CPU at tiny sizes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spawns

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_dry_run_reports_every_step(tmp_path):
    out_file = tmp_path / "gpu_check.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(scratch))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry-run", "--out", str(out_file)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=380,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res == json.loads(out_file.read_text())
    assert res["dry_run"] is True and res["device"] == "cpu"

    tests = res["cuda_tests"]
    # At least the AMP test of tests/engine/test_engine_toy_trainer.py is CUDA-only; on CPU
    # every selected test is skipped, none runs.
    assert tests["selected"] >= 1 and tests["skipped"] == tests["selected"], tests
    assert tests["passed"] == 0 and tests["failed"] == 0

    rows = res["benchmark"]
    assert [(r["amp"], r["batch"]) for r in rows] == [("bf16", 2), ("fp16", 2)]
    for r in rows:
        assert r["fits"] is True and r["channels_last"] is True, r
        assert r["images_per_s"] > 0 and r["step_over_floor"] > 0 and r["peak_mem_gib"] > 0
        assert abs(r["images_per_s"] * r["s_per_iter"] - 2) < 1e-6

    ft = res["finetune"]
    assert ft["rc"] == 0 and ft["iters"] == 1, ft
    for k in ("bbox/AP", "segm/AP"):
        assert 0.0 <= ft[k] <= 100.0
    # The fine-tune's generated data and checkpoints do not outlive the check.
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("gpu_check_ft_")]
