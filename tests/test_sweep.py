"""run_experiments.py: the grid, resumability after SIGKILL, failures recorded, seeds aggregated, broken runs
redone and locked ones skipped; its table: written under out_dir's lock, leaving out wrong-typed summaries,
saying when the runs' thread counts differ."""
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

import run_experiments
import train
from config import make_config, run_dir_of
from runtime.epochs import RunFailed
from sweep import report as sweep_report
from tests.fixtures import files_of, interrupt_after_first_epoch, small_run_args

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "fashion-mnist_teacher_seed12"
args = partial(small_run_args, batch_size=32)  # on fashion_idx
REAL = small_run_args(max_train_samples=128, max_test_samples=64, epochs=1, augment="flip")  # real Fashion-MNIST


def test_grid_has_teacher_controls_and_students():
    base = make_config(["--preset=smoke", "--seeds=2"])
    runs = run_experiments.grid(base)
    assert runs[0].role == "teacher" and runs[0].precision == "fp32"
    students = runs[1:]
    assert len(students) == 4 * 2 * 3 * 2  # depths x seeds x precisions x (its ce control + kd)
    assert sum(r.method == "ce" for r in students) == 4 * 2 * 3
    for r in students:  # every student's control is in its own precision
        assert any(c.method == "ce" and (c.blocks, c.seed, c.precision) == (r.blocks, r.seed, r.precision)
                   for c in students)
    assert all(r.optimizer == "adam8bit" for r in students if r.precision == "fp8")
    # on a CPU fp16 becomes bf16, and says so
    half = [r for r in students if r.precision_note]
    assert half and all(r.precision == "bf16" and "fp16" in r.precision_note for r in half)
    assert len({run_dir_of(r) for r in runs}) == len(runs)


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
    assert len(rows) == 1 + 2 * 2 * 2 and all(r["status"] == "complete" for r in rows)  # per precision CE + KD
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


# ----------------------------------------------------------------------------- broken and locked runs

def test_sweep_redoes_garbage_summaries_and_corrupt_checkpoints_and_skips_a_locked_run(fashion_idx, tmp_path, capsys):
    import fcntl

    base = make_config(args(fashion_idx, tmp_path, "--sweep_blocks=[1,2,3,4]", "--sweep_methods=[]"))
    assert run_experiments.main(base) == 0
    run = lambda b: tmp_path / f"fashion-mnist_res{b}_b32_fp32_ce_s0"  # noqa: E731
    garbage = {1: b"\x80\x04\x95\xff binary garbage \xfe\xfd", 2: b"[1, 2, 3]", 3: b"{ not json", 4: b"\xff\xfe"}
    for b, junk in garbage.items():
        (run(b) / "summary.json").write_bytes(junk)
    (run(3) / "checkpoint.pt").write_bytes(b"")  # torn: that run must start over, not fail
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "summary.json").write_bytes(b"\x00\x01garbage\xff")  # outside the grid
    teacher_files = files_of(tmp_path / TEACHER)
    capsys.readouterr()
    fd = os.open(run(4) / ".lock", os.O_RDWR)  # as another process would hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_experiments.main(base) == 0
    finally:
        os.close(fd)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    for b in (1, 2, 3):
        assert json.loads((run(b) / "summary.json").read_text())["status"] == "complete", b
    assert "checkpoint.pt: empty file (0 bytes)" in out and "starting that run over" in out
    assert "res4_b32_fp32_ce_s0: skipped:" in out and "in use by" in out and "1 run(s) skipped" in err
    assert (run(4) / "summary.json").read_bytes() == garbage[4]  # the holder's run is left alone
    assert files_of(tmp_path / TEACHER) == teacher_files  # the complete teacher is untouched
    table = (tmp_path / "results.csv").read_text()
    assert all(f"res{b}_b32" in table for b in (1, 2, 3)) and "res4_b32" not in table and "stray" not in table


# ----------------------------------------------------------------------------- the table

def test_a_wrong_typed_summary_is_left_out_of_table_and_plots_and_redone(tmp_path, capsys):
    import plot_experiment_results

    train.main(make_config(REAL, method="ce", out_dir=str(tmp_path / "runs")))
    run = tmp_path / "runs" / "fashion-mnist_res4_b64_fp32_ce_s0"
    s = json.loads((run / "summary.json").read_text())
    s["best_test_acc"] = "high"
    (run / "summary.json").write_text(json.dumps(s))
    base = make_config(REAL, out_dir=str(tmp_path / "runs"), sweep_blocks=(4,), sweep_methods=())
    capsys.readouterr()
    assert run_experiments.main(base) == 0  # the sweep redoes the run: its summary is whole again
    assert json.loads((run / "summary.json").read_text())["best_test_acc"] != "high"
    s["best_test_acc"] = "high"
    (run / "summary.json").write_text(json.dumps(s))
    other = tmp_path / "runs" / "copy"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps(dict(s, best_test_acc=80.0, run_name="copy")))
    (other / "history.json").write_text((run / "history.json").read_text())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        plot_experiment_results.cli([f"--out_dir={tmp_path}/runs"])
    assert e.value.code in (0, None)
    err = capsys.readouterr().err
    assert "'best_test_acc' is \"high\", not a number; left out of the plots" in err and "Traceback" not in err
    from report.results import collect_results

    rows = collect_results(str(tmp_path / "runs"), [str(run), str(other)])
    assert [r["run_name"] for r in rows] == ["copy"]
    assert "left out of the table" in capsys.readouterr().err


def test_a_table_of_runs_with_different_thread_counts_says_so(monkeypatch):
    import report.results as results

    monkeypatch.setattr(results, "markdown_table", lambda rows, seeds: "")
    row = {"role": "student", "status": "complete", "hardware": "AMD EPYC", "selected_on": "val", "threads": 2}
    same = results.results_text("out", [row, dict(row)], make_config())[1]
    mixed = results.results_text("out", [row, dict(row, threads=1)], make_config())[1]
    assert "thread counts" not in same
    assert "different torch thread counts (1, 2;" in mixed


@pytest.mark.slow
def test_two_sweeps_on_one_out_dir_never_leave_a_partial_table(tmp_path, monkeypatch):
    """Sweep B finishes its runs while sweep A is building its table: B's table must come after A's
    (the table lock), so the last results.md holds both sweeps' runs."""
    out = tmp_path / "shared"
    argv = REAL + ["--sweep_methods=[]", "--sweep_blocks=[4]", "--teacher_checkpoint=unused", f"--out_dir={out}"]
    real = sweep_report.results_text

    def slow_results_text(*a, **k):  # A's table is built from what is finished now: B is not yet
        texts = real(*a, **k)
        b = subprocess.Popen([sys.executable, "run_experiments.py", *argv, "--first_seed=1"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = out / "fashion-mnist_res4_b64_fp32_ce_s1" / "summary.json"
        deadline = time.monotonic() + 120
        while not done.exists() and b.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        try:  # B's own table would be written now, were it not for A's lock
            b.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        slow_results_text.b = b
        return texts

    monkeypatch.setattr(sweep_report, "results_text", slow_results_text)
    assert run_experiments.main(make_config(argv)) == 0
    assert slow_results_text.b.wait(timeout=120) == 0
    table = (out / "results.md").read_text()
    assert "2 runs" in table.splitlines()[0], table
