"""A run's life when something goes wrong: a finished run is never replaced by accident, --init_from names
only a finished fp32 student, an unwritable tb/ turns TensorBoard off with a warning, a torn history never
survives a resume, a killed write's temp file is removed on resume, evaluate.py names a config.json at
fault, a run that stops before it writes leaves no run folder, and every run records its torch threads (a
Ray task takes a local run's). Tiny idx data (conftest.fashion_idx) or 128 real images, 1-2 epochs."""
import json
import os
import signal
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

import train
from config import make_config
from tests.fixtures import files_of, interrupt_after_first_epoch, one_line_exit, read_only, small_run_args
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RUN = "fashion-mnist_res1_b32_fp32_ce_s0"
args = partial(small_run_args, batch_size=32, blocks=1, method="ce")  # on fashion_idx
REAL = small_run_args(max_train_samples=128, max_test_samples=64, epochs=1, augment="flip")  # real Fashion-MNIST


def interrupted_run(data, out, monkeypatch, *extra) -> Path:
    """A 2-epoch run stopped (as a kill would) in its second epoch: config.json, the first epoch's
    best_model.safetensors, history.json and checkpoint.pt, no summary.json."""
    with monkeypatch.context() as m:
        interrupt_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train.main(make_config(args(data, out, "--epochs=2", *extra)))
    run = out / RUN
    assert (run / "checkpoint.pt").exists() and not (run / "summary.json").exists()
    return run


def finished_run(tmp_path) -> Path:
    """A finished res4 CE run on 128 real images, in tmp_path/runs."""
    out = tmp_path / "runs"
    train.main(make_config(REAL, method="ce", out_dir=str(out)))
    return out / "fashion-mnist_res4_b64_fp32_ce_s0"


# ----------------------------------------------------------------------------- a finished run

def test_finished_run_is_never_replaced_by_accident(fashion_idx, tmp_path, capsys):
    train.main(make_config(args(fashion_idx, tmp_path, "--temperature=2")))
    run = tmp_path / RUN
    (run / "evaluation.json").write_text("{}")  # a report of these weights
    before = files_of(run)
    again = make_config(args(fashion_idx, tmp_path, "--temperature=3"))  # same run name
    with pytest.raises(UserError, match="holds a finished run; pass --overwrite=True"):
        train.main(again)
    assert files_of(run) == before  # nothing deleted, nothing rewritten
    line, _ = one_line_exit(train.cli, args(fashion_idx, tmp_path), capsys)
    assert "--overwrite=True" in line and "--run_name" in line
    s = train.main(make_config(args(fashion_idx, tmp_path, "--overwrite=True")))
    assert s["status"] == "complete" and "replacing the finished run" in capsys.readouterr().out
    assert not (run / "evaluation.json").exists()  # the old weights' report went with them


# ----------------------------------------------------------------------------- --init_from

def test_init_from_refuses_an_interrupted_a_failed_and_a_list_config_run(fashion_idx, tmp_path, monkeypatch, capsys):
    from runtime.run_dir import check_init_from
    from utils.run_files import failed_summary, write_summary

    run = interrupted_run(fashion_idx, tmp_path, monkeypatch)
    assert (run / "best_model.safetensors").exists()  # weights there, but the run never finished
    qat = lambda d: make_config(args(fashion_idx, tmp_path / "q", "--qat=int4", f"--init_from={d}"))  # noqa: E731
    with pytest.raises(UserError, match="not a finished run") as e:
        check_init_from(qat(run))
    assert "--resume=True" in str(e.value)
    write_summary(run, failed_summary(error="RuntimeError: out of memory", run_name=RUN, role="student",
                                      dataset="fashion-mnist", blocks=1, arch="res1", precision="fp32",
                                      method="ce", seed=0))
    with pytest.raises(UserError, match="not a finished run .*failed: RuntimeError: out of memory"):
        check_init_from(qat(run))
    (run / "config.json").write_text("[1, 2, 3]")
    line, _ = one_line_exit(train.cli, args(fashion_idx, tmp_path / "q", "--qat=int4", f"--init_from={run}"), capsys)
    assert f"{run / 'config.json'}: not a JSON object of config fields (found list)" in line, line
    assert not (tmp_path / "q").exists()  # refused before anything is written


# ----------------------------------------------------------------------------- tb/

@pytest.mark.parametrize("how", ["a file", "read-only"])
def test_an_unwritable_tb_folder_turns_tensorboard_off_with_one_warning(fashion_idx, tmp_path, monkeypatch, capsys,
                                                                         how):
    run = interrupted_run(fashion_idx, tmp_path, monkeypatch)
    tb = run / "tb"
    assert tb.is_dir()
    if how == "a file":
        for p in tb.iterdir():
            p.unlink()
        tb.rmdir()
        tb.write_text("not a folder")
    capsys.readouterr()
    resume = make_config(args(fashion_idx, tmp_path, "--epochs=2", "--resume=True"))
    if how == "a file":
        s = train.main(resume)
    else:
        with read_only(tb):
            s = train.main(resume)
    err = capsys.readouterr().err
    assert s["status"] == "complete" and s["epochs_run"] == 2
    assert "Traceback" not in err and "Exception in thread" not in err, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and f"{tb}: cannot write TensorBoard events there" in warnings[0], err
    assert "TensorBoard is off for this run" in warnings[0]


# ----------------------------------------------------------------------------- a torn history, summary gone

def test_a_torn_history_without_a_summary_is_rewritten_from_the_checkpoint_on_resume(fashion_idx, tmp_path, capsys):
    whole = train.main(make_config(args(fashion_idx, tmp_path, "--epochs=2")))
    run = tmp_path / RUN
    history = json.loads((run / "history.json").read_text())
    (run / "summary.json").unlink()
    (run / "history.json").write_text(json.dumps(history)[:40])  # torn
    capsys.readouterr()
    again = train.main(make_config(args(fashion_idx, tmp_path, "--epochs=2", "--resume=True")))
    assert f"{run / 'history.json'}: unreadable; rewritten from checkpoint.pt (2 epochs)" in capsys.readouterr().err
    assert again["status"] == "complete" and again["best_test_acc"] == whole["best_test_acc"]
    assert json.loads((run / "history.json").read_text()) == history


def test_a_resumed_finished_run_rewrites_a_torn_history(tmp_path, capsys):
    run = finished_run(tmp_path)
    whole = json.loads((run / "history.json").read_text())
    (run / "history.json").write_text(json.dumps(whole)[:20])
    capsys.readouterr()
    train.main(make_config(REAL, method="ce", out_dir=str(tmp_path / "runs"), resume=True))
    assert "rewritten from checkpoint.pt" in capsys.readouterr().err
    assert json.loads((run / "history.json").read_text()) == whole


# ----------------------------------------------------------------------------- a config.json at fault

@pytest.mark.parametrize("content, says", [("[1, 2]", "not a JSON object"),
                                            ('{"blocks": "four"}', "field blocks='four': expected int"),
                                            ('{"width": 1e30}', "field width=1e+30: expected int"),
                                            ('{"width": 1000000000000000000000000000000}', "field width=")])
def test_evaluate_names_the_config_file_at_fault(content, says, tmp_path, capsys):
    import evaluate

    run = finished_run(tmp_path)
    saved = json.loads((run / "config.json").read_text())
    bad = json.loads(content)
    (run / "config.json").write_text(json.dumps(bad if isinstance(bad, list) else dict(saved, **bad)))
    err, _ = one_line_exit(evaluate.cli, [f"--run={run}"], capsys)
    assert err.startswith(f"error: {run / 'config.json'}: ") and says in err, err


# ----------------------------------------------------------------------------- a killed write's temp file

KILLED_WRITE = ("import sys, time; from utils.atomic import atomic_write_to\n"
                "def write(tmp):\n open(tmp, 'wb').write(b'half a file'); print('writing', flush=True); time.sleep(60)\n"
                "atomic_write_to(sys.argv[1], write)\n")


def test_a_killed_writes_temp_file_is_removed_when_the_run_resumes(fashion_idx, tmp_path, monkeypatch, capsys):
    import fcntl

    run = interrupted_run(fashion_idx, tmp_path, monkeypatch)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(run / "summary.json")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    stale = [p for p in run.iterdir() if p.name.startswith(".summary.json.") and p.name.endswith(".tmp")]
    assert len(stale) == 1 and stat.S_IMODE(stale[0].stat().st_mode) == 0o600  # mkstemp's, never chmod-ed
    (run / "notes.tmp").write_text("the user's")  # not the atomic writer's names: kept
    (run / ".notes.tmp").write_text("the user's")
    resume = make_config(args(fashion_idx, tmp_path, "--epochs=2", "--resume=True"))
    fd = os.open(run / ".lock", os.O_RDWR)  # another process holds the run: nothing of it is touched
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="in use by"):
            train.main(resume)
    finally:
        os.close(fd)
    assert stale[0].exists()
    capsys.readouterr()
    assert train.main(resume)["status"] == "complete"
    assert not stale[0].exists() and (run / "notes.tmp").exists() and (run / ".notes.tmp").exists()
    assert f"removed 1 temp file(s) of an interrupted write ({stale[0].name})" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a bad timm name

@pytest.mark.parametrize("flags", [["--student_arch=timm:nosuchnet"], ["--role=teacher", "--teacher_arch=timm:nosuchnet"]])
def test_a_bad_timm_name_is_one_line_and_leaves_no_run_folder(fashion_idx, tmp_path, capsys, flags):
    out = tmp_path / "out"
    out.mkdir()
    line, _ = one_line_exit(train.cli, args(fashion_idx, out, *flags), capsys)
    assert "timm:nosuchnet: no timm model of that name" in line, line
    assert os.listdir(out) == []  # no run folder holding only .lock


def test_a_run_that_fails_before_writing_leaves_no_run_folder(fashion_idx, tmp_path, capsys):
    out = tmp_path / "out"
    text = tmp_path / "teacher.pt"
    text.write_text("not weights\n")
    line, _ = one_line_exit(train.cli, args(fashion_idx, out, "--method=kd", f"--teacher_checkpoint={text}"), capsys)
    assert "teacher.pt: not a torch weights file" in line
    assert os.listdir(out) == []


# ----------------------------------------------------------------------------- threads

def test_every_summary_records_its_torch_threads(fashion_idx, tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        s = train.main(make_config(args(fashion_idx, tmp_path)))
    finally:
        torch.set_num_threads(before)
    assert s["threads"] == 1 and json.loads((tmp_path / RUN / "summary.json").read_text())["threads"] == 1
    keys = list(s)
    assert keys.index("threads") == keys.index("hardware") + 1


def test_ray_student_tasks_default_to_a_local_runs_threads():
    from runtime.ray_sweep import task_cpus

    # cpus_per_task=0 (the default): not set by the user
    unset, local = make_config(["--launcher=ray"]), torch.get_num_threads()
    assert task_cpus(unset, "student", most_cpus=64) == local  # what a local sweep's runs use
    assert task_cpus(unset, "student", most_cpus=1) == 1  # never more than a node has
    assert task_cpus(make_config(["--launcher=ray", "--cpus_per_task=3"]), "student", most_cpus=64) == 3  # the user's
    assert task_cpus(unset, "teacher", most_cpus=64) == 64  # the teacher alone on the largest node, as before


# ----------------------------------------------------------------------------- where the time went

def test_a_run_records_where_its_time_went_across_a_resume(fashion_idx, tmp_path, monkeypatch):
    from utils.run_files import load_checkpoint

    run = interrupted_run(fashion_idx, tmp_path, monkeypatch, "--val_fraction=0.25")
    first = load_checkpoint(run / "checkpoint.pt")["stage_seconds"]
    assert first["val"] > 0 and first["files"] > 0 and first["test"] == 0  # the test split waits for the end
    s = train.main(make_config(args(fashion_idx, tmp_path, "--epochs=2", "--val_fraction=0.25", "--resume=True")))
    stages = s["stage_seconds"]
    assert set(stages) == {"train", "val", "test", "files"} and stages["train"] == s["train_seconds"]
    assert stages["val"] > first["val"] and stages["files"] > first["files"] and stages["test"] > 0
