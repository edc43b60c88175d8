"""Scale-out, tested on this CPU: the sweep on a local Ray (2 CPUs) gives the local launcher's table and
files, with or without a shared out_dir; a Ray worker killed mid-run and then the driver killed
mid-sweep end, after a rerun, with the finished run's files byte-identical and the rest complete;
torchrun (2 processes, gloo, SyncBatchNorm), interrupted and resumed, trains the weights one
uninterrupted process trains at the same effective batch; an unreachable Ray address is one line."""
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

import run_experiments
import train
from config import make_config
from tests.fixtures import small_run_args
from utils.checkpoint import load_state_dict_file

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-scale.txt")

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("train_seconds", "stage_seconds", "seconds_per_epoch", "images_per_second", "epoch_seconds")
NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the processes to kill in /proc")
GRID = dict(sweep_blocks=(2,), sweep_precisions=("fp32",), sweep_methods=("kd",))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _csv_rows(out: Path) -> list:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(open(out / "results.csv"))]


def _md_without_timing(out: Path) -> list:
    lines = (out / "results.md").read_text().splitlines()[1:]  # the first names out_dir
    return [line.rsplit("|", 3)[0] if line.startswith("|") else line for line in lines]


def _summary(run: Path, out: Path) -> dict:
    s = json.loads((run / "summary.json").read_text().replace(str(out), "OUT"))
    s["provenance"].pop("command", None)  # the process that wrote it: pytest here, a Ray worker there
    return {k: v for k, v in s.items() if k not in TIMING}


def test_ray_sweep_gives_the_local_table_and_files(tmp_path, local_ray):
    # every run on 2 threads, as the Ray tasks run (the teacher's task takes the node's 2 CPUs, the
    # students' ask for 2): the same kernels, the same bits
    torch.set_num_threads(2)
    base = make_config(["--preset=smoke"], **GRID)
    outs = {"local": dict(), "ray": dict(launcher="ray", cpus_per_task=2),
            "ray-no-shared-fs": dict(launcher="ray", ray_shared_fs=False, runs_per_task=0, cpus_per_task=2)}
    for name, how in outs.items():
        assert run_experiments.main(dataclasses.replace(base, out_dir=str(tmp_path / name), **how)) == 0, name
    local = tmp_path / "local"
    runs = sorted(p for p in local.iterdir() if (p / "summary.json").exists())
    assert len(runs) == 3  # teacher, CE control, KD student
    for name in ("ray", "ray-no-shared-fs"):
        out = tmp_path / name
        assert _csv_rows(out) == _csv_rows(local), name
        assert _md_without_timing(out) == _md_without_timing(local), name
        for run in runs:
            other = out / run.name
            files = lambda d: sorted(p.name for p in d.iterdir() if not p.name.startswith("."))  # noqa: E731 (.lock: who ran it)
            assert files(other) == files(run), (name, run.name)
            assert (other / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
            assert _summary(other, out) == _summary(run, local), (name, run.name)


def _descendants(root: int) -> list:
    children = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children[int(stat.read_text().rsplit(")", 1)[1].split()[1])].append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [root]
    while todo:
        kids = children[todo.pop()]
        found += kids
        todo += kids
    return found


def _training_tasks(root: int) -> set:
    """Ray worker processes under `root` running a sweep task right now (Ray titles them ray::<task>)."""
    pids = set()
    for pid in _descendants(root):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::train_task"):
                pids.add(pid)
        except OSError:
            continue
    return pids


def _wait_for(cond, proc, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"the sweep ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _kill_tree(proc) -> None:
    """SIGKILL `proc`, started in its own session, and every process under it (Ray's workers and
    torchrun's ranks run in sessions of their own)."""
    pids = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _files(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@NEEDS_PROC
def test_killed_worker_then_killed_driver_end_complete_after_a_rerun(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "run_experiments.py", "--preset=smoke", f"--out_dir={out}", "--sweep_blocks=[2]",
           "--sweep_precisions=[fp32]", "--epochs=4", "--teacher_epochs=1", "--launcher=ray", "--runs_per_task=0"]
    teacher = out / "fashion-mnist_teacher_seed12"
    students = [out / "fashion-mnist_res2_b64_fp32_ce_s0", out / "fashion-mnist_res2_b64_fp32_kd_s0"]
    with open(tmp_path / "first.log", "w") as log:
        # its own session: the driver and the local Ray it starts end together with os.killpg
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # a worker killed mid-run: the students' task, after their first epoch
        _wait_for(lambda: all((s / "checkpoint.pt").exists() for s in students), proc, "the first epoch")
        victims = _training_tasks(proc.pid)
        assert victims and not any((s / "summary.json").exists() for s in students)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        done_before = _files(teacher)
        # the driver killed mid-sweep, once Ray runs the task again
        _wait_for(lambda: _training_tasks(proc.pid) - victims, proc, "Ray's retry of the killed task")
        first_epochs = {s: json.loads((s / "history.json").read_text())[0] for s in students}
    finally:
        _kill_tree(proc)
    assert not (out / "results.csv").exists(), "the sweep finished before its driver was killed"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "fashion-mnist_teacher_seed12: skipped" in r.stdout
    assert _files(teacher) == done_before  # every file of the finished run, byte for byte
    for s in students:
        history = json.loads((s / "history.json").read_text())
        assert [h["epoch"] for h in history] == [1, 2, 3, 4]
        assert history[0] == first_epochs[s]  # resumed after the kills, never redone
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 3 and all(r["status"] == "complete" for r in rows)


@NEEDS_PROC
def test_torchrun_resumed_matches_one_process(tmp_path):
    args = small_run_args(method="ce", blocks=2, fc_layers="[]", optimizer="sgd", lr=0.05, epochs=4,
                          max_train_samples=128, sync_bn=True)
    one = train.main(make_config(args, out_dir=str(tmp_path / "one")))
    run = "fashion-mnist_res2_b64_fp32_ce_s0"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "train.py", *args,
           f"--out_dir={tmp_path / 'two'}", "--resume=True"]
    two = tmp_path / "two" / run
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        _wait_for(lambda: (two / "checkpoint.pt").exists(), proc, "the first epoch")
    finally:
        _kill_tree(proc)
    assert not (two / "summary.json").exists(), "the run finished before it could be killed"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming after epoch" in r.stdout
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["world_size"], summary["effective_batch_size"], summary["batch_per_rank"]) == (2, 64, 32)
    assert "SyncBatchNorm" in summary["data_parallel"] and summary["lr"] == one["lr"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in (tmp_path / "one" / run).iterdir())
    a = load_state_dict_file(tmp_path / "one" / run / "model.safetensors")
    b = load_state_dict_file(two / "model.safetensors")
    for k in a:  # float rounding only: without SyncBatchNorm the BatchNorm statistics differ by ~100x this
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-3, msg=k)
    losses = [[h["train_loss"] for h in json.loads((d / "history.json").read_text())]
              for d in (tmp_path / "one" / run, two)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)  # every rank's shard counted, once
    # the finished run again, without --resume or --overwrite: rank 0 refuses, and rank 1 follows its
    # verdict at once (no rank left waiting in a collective), both with the one-line error
    refused = [c for c in cmd if c != "--resume=True"]
    r = subprocess.run(refused, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and r.stderr.count("--overwrite=True") >= 2, r.stderr[-3000:]
