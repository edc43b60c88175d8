"""run_experiments.py: the grid, resumability after SIGKILL, failures recorded, seeds aggregated."""
import csv
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_experiments
import train
from config import make_config
from runtime.epochs import RunFailed
from tests.fixtures import interrupt_after_first_epoch

ROOT = Path(__file__).resolve().parents[1]


def test_grid_has_teacher_controls_and_students():
    base = make_config(["--preset=smoke", "--seeds=2"])
    runs = run_experiments.grid(base)
    assert runs[0].role == "teacher" and runs[0].precision == "fp32"
    students = runs[1:]
    assert len(students) == 4 * 2 * (1 + 3)  # depths x seeds x (ce control + 3 precisions)
    assert sum(r.method == "ce" for r in students) == 8
    assert all(r.optimizer == "adam8bit" for r in students if r.precision == "fp8")
    # on a CPU fp16 becomes bf16, and says so
    half = [r for r in students if r.precision_note]
    assert half and all(r.precision == "bf16" and "fp16" in r.precision_note for r in half)
    assert len({run_experiments.run_dir_of(r) for r in runs}) == len(runs)


@pytest.mark.slow
def test_sigkill_after_first_student_then_rerun_completes_without_redoing(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "run_experiments.py", "--preset=smoke", f"--out_dir={out}", "--sweep_blocks=[2,3]",
           "--sweep_precisions=[fp32,fp8]"]
    first = out / "fashion-mnist_res2_b64_fp32_ce_s0" / "summary.json"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    done = {p: p.stat().st_mtime_ns for p in first.parent.rglob("*") if p.is_file()}
    contents = {p: p.read_bytes() for p in done}
    assert not (out / "results.csv").exists(), "the sweep finished before it could be killed"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fashion-mnist_res2_b64_fp32_ce_s0: skipped" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in first.parent.rglob("*") if p.is_file()} == done
    assert {p: p.read_bytes() for p in done} == contents
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 1 + 2 * 3 and all(r["status"] == "complete" for r in rows)
    kd = [r for r in rows if r["method"] == "kd"]
    assert all(r["kd_gain"] != "" for r in kd)
    assert any("simulated" in r["precision_how"] for r in rows if r["precision"] == "fp8")
    md = (out / "results.md").read_text()
    assert "teacher" in md and "KD gain" in md and "res3" in md


def test_failed_run_is_recorded_and_sweep_goes_on(tmp_path, monkeypatch):
    real = train.train_runs

    def flaky(cfgs):  # the fp8 student of a group fails as a diverging run would; its group-mates go on
        ok = [c for c in cfgs if c.precision != "fp8"]
        done = iter(real(ok) if ok else [])
        return [RunFailed("non-finite training loss at epoch 1: try a lower --lr") if c.precision == "fp8"
                else next(done) for c in cfgs]

    monkeypatch.setattr(train, "train_runs", flaky)
    base = make_config(["--preset=smoke"], out_dir=str(tmp_path), sweep_blocks=(2,), sweep_precisions=("fp32", "fp8"))
    assert run_experiments.main(base) == 1
    rows = {r["run_name"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert rows["fashion-mnist_res2_b64_fp8_kd_s0"]["status"] == "failed"
    assert "non-finite" in rows["fashion-mnist_res2_b64_fp8_kd_s0"]["error"]
    assert rows["fashion-mnist_res2_b64_fp32_kd_s0"]["status"] == "complete"
    assert "Failed runs:" in (tmp_path / "results.md").read_text()


def test_two_seeds_give_mean_and_std(tmp_path):
    base = make_config(["--preset=smoke", "--seeds=2"], out_dir=str(tmp_path), sweep_blocks=(2,),
                       sweep_precisions=("fp32",))
    assert run_experiments.main(base) == 0
    md = (tmp_path / "results.md").read_text()
    assert "mean ± std" in md and "(n=2)" in md
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert sorted(r["seed"] for r in rows if r["role"] == "student") == ["0", "0", "1", "1"]


def test_partial_run_resumes_under_other_deploy_and_sweep_fields(tmp_path, monkeypatch):
    base = make_config(["--preset=smoke", "--epochs=2"], out_dir=str(tmp_path), sweep_blocks=(2,),
                       sweep_methods=())
    control = run_experiments.grid(base)[1]
    with monkeypatch.context() as m:
        interrupt_after_first_epoch(m)
        try:
            train.main(control)
        except KeyboardInterrupt:
            pass
    run = tmp_path / "fashion-mnist_res2_b64_fp32_ce_s0"
    assert (run / "checkpoint.pt").is_file() and not (run / "summary.json").exists()
    other = make_config(["--preset=smoke", "--epochs=2", "--deploy_repeats=7", "--seeds=1", "--calib_samples=9"],
                        out_dir=str(tmp_path), sweep_blocks=(2,), sweep_methods=())
    assert run_experiments.main(other) == 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 kept, epoch 2 added: resumed, not redone


def test_a_run_whose_training_config_differs_fails_alone(tmp_path, monkeypatch, capsys):
    base = make_config(["--preset=smoke"], out_dir=str(tmp_path), sweep_blocks=(2, 3), sweep_methods=(),
                       epochs=2)
    control = run_experiments.grid(base)[1]
    with monkeypatch.context() as m:
        interrupt_after_first_epoch(m)
        try:
            train.main(dataclasses.replace(control, lr=0.5))  # the interrupted run had another lr
        except KeyboardInterrupt:
            pass
    assert run_experiments.main(base) == 1
    rows = {r["run_name"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    failed = rows["fashion-mnist_res2_b64_fp32_ce_s0"]
    assert failed["status"] == "failed" and "cannot resume" in failed["error"] and "lr" in failed["error"]
    assert rows["fashion-mnist_res3_b64_fp32_ce_s0"]["status"] == "complete"
    assert "Traceback" not in capsys.readouterr().err
