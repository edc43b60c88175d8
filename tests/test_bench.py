"""benchmarks/bench_train.py at toy size, through its CLI: it runs all three paths on both datasets
and writes the JSON the README numbers come from (so the benchmark cannot rot)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--dataset=intel,fashion-mnist",
           "--images=8", "--test_images=4", "--image_size=16", "--classes=2", "--epochs=1", "--batch_size=4",
           "--teacher_width=4", "--threads=1", f"--work_dir={tmp_path / 'work'}", f"--json={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["machine"]["hardware"]
    assert set(res["datasets"]) == {"intel", "fashion-mnist"}
    for name, d in res["datasets"].items():
        for path in ("reference", "project", "project_fast", "floor"):
            m = d["median"][path]
            assert m["images_per_second"] > 0 and math.isfinite(m["images_per_second"]), (name, path)
            # every path trains on the same images: 1 epoch x 2 full batches of 4
            assert d["runs"][path][0]["train_images_seen"] == 8, (name, path)
        for k in ("project_over_reference", "project_over_floor", "project_fast_over_reference"):
            assert math.isfinite(d["ratios"][k]) and d["ratios"][k] > 0, (name, k)
        assert d["runs"]["project_fast"][0]["settings"] == {"teacher_precision": "bf16", "compile": False}
        assert "teacher forward in bf16" in d["runs"]["project_fast"][0]["teacher_logits"]
        assert d["runs"]["project"][0]["settings"]["teacher_precision"] == "fp32"
        for path in ("reference", "project", "project_fast"):
            assert 0.0 <= d["median"][path]["final_test_acc"] <= 100.0
        assert isinstance(d["target_met"], bool) and isinstance(d["target_met_project_fast"], bool)
    assert "(b)/(a) speed-up" in proc.stdout and "(b')/(a) speed-up" in proc.stdout


def test_bench_sweep_times_a_whole_grid(tmp_path):
    out = tmp_path / "sweep.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_sweep.py"), "--preset=smoke",
           "--override=--max_train_samples=64", "--override=--max_test_samples=32", "--override=--batch_size=16",
           "--override=--sweep_blocks=[2]", "--override=--sweep_precisions=[fp32]", "--override=--seeds=2",
           "--override=--augment=flip", f"--work_dir={tmp_path / 'work'}", f"--json={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["students"] == 4 and set(res["median_seconds"]) == {"original", "project", "floors"}
    runs = res["runs"]
    # all three paths train the same students on the same images: 2 seeds x (CE + KD) x 1 epoch x 4 batches of 16
    assert runs["project"][0]["train_images_seen"] == runs["original"][0]["train_images_seen"] == 4 * 64
    assert runs["floors"][0]["train_images_seen"] == 4 * 64 and runs["project"][0]["exit_code"] == 0
    assert set(runs["original"][0]["final_test_acc"]) == set(runs["project"][0]["final_test_acc"])
    for k in ("original_over_project", "project_over_floors", "original_over_floors"):
        assert math.isfinite(res["ratios"][k]) and res["ratios"][k] > 0


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh at tiny size with --device=cpu: every step runs and writes its files, so
    the script runs as it is the day a GPU is lent."""
    out = tmp_path / "gpu"
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out), "cpu", "tiny"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == ["full", "bench_train", "bench_sweep_eager", "bench_sweep_graphs"]
    assert r.returncode == 0 and all(s["exit_code"] == 0 for s in steps), (r.stdout, r.stderr)
    for name in ("bench_train.json", "bench_sweep_eager.json", "bench_sweep_graphs.json", "full_results.md"):
        assert (out / name).stat().st_size > 0, name
    graphs = json.loads((out / "bench_sweep_graphs.json").read_text())
    assert graphs  # on a CPU --cuda_graphs runs eager and says why (runtime/cuda_graphs.py)
