"""tools/benchmark.py runs on the tiny config and reports its JSON fields (no timing asserts)."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_reports_phases_floor_and_memory(capsys, load_script):
    tool = load_script("tools/benchmark.py")
    res = tool.run([
        "--config-file", str(ROOT / "configs/pretrain/soco_R18_FPN_tiny.yaml"),
        "--iters", "1", "--warmup", "0", "--batch", "2", "--threads", "1", "--device", "cpu",
    ])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(res))
    for key in ("images_per_s", "s_per_iter", "peak_mem_gib", "outside_backbone_share",
                "forward_s", "backward_s", "optimizer_s", "floor_s_per_iter", "step_over_floor"):
        assert key in last
    parts = last["forward_s"] + last["backward_s"] + last["optimizer_s"]
    assert abs(parts - last["s_per_iter"]) < 1e-9
    assert abs(last["step_over_floor"] * last["floor_s_per_iter"] - last["s_per_iter"]) < 1e-9
    assert last["method"] == "SoCo"
    assert abs(last["images_per_s"] * last["s_per_iter"] - 2) < 1e-9
    assert 0.0 <= last["outside_backbone_share"] < 1.0
    assert last["peak_mem_gib"] > 0.05 and last["batch"] == 2
