"""Bad input and faults around real (tiny) runs: finished runs are never replaced by accident, read-only
folders and garbage files are one line or a warning, the sweep redoes what is broken and goes on.
Tiny idx data (120 train images), 1 epoch, the smoke teacher: seconds per run."""
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

import evaluate
import run_experiments
import train
from config import make_config
from tests.fixtures import make_fashion_mnist_idx, make_imagefolder
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "fashion-mnist_teacher_seed12"


def _writable(folder: Path) -> bool:
    try:
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


@contextmanager
def read_only(*folders):
    """The folders (and everything in them) read-only for this process, root included: the write bits
    off, and where that does not stop root, the immutable attribute (chattr +i). Skips when neither can."""
    folders = [Path(f) for f in folders]
    every = [p for f in folders for p in [f, *f.rglob("*")]]
    modes = {p: p.stat().st_mode for p in every}
    for p in every:
        p.chmod(modes[p] & ~0o222)
    immutable = False
    try:
        if _writable(folders[0]):  # root ignores the mode bits
            immutable = subprocess.run(["chattr", "-R", "+i", *map(str, folders)], capture_output=True).returncode == 0
            if not immutable or _writable(folders[0]):
                pytest.skip("cannot make a folder read-only for this user here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", *map(str, folders)], check=True)
        for p in every:
            p.chmod(modes[p])


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_exit(cli, argv, capsys, code=2) -> tuple:
    """(the one stderr line, stdout) of a script's cli run in-process that must exit `code`."""
    capsys.readouterr()  # only what this call prints
    with pytest.raises(SystemExit) as e:
        cli(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]  # progress bars and warnings aside
    assert e.value.code == code, err
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0] and "Traceback" not in err, err
    return lines[0], out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fashion_mnist_idx(tmp_path_factory.mktemp("fmnist"), n_train=120, n_test=40)


def args(data, out, *extra) -> list:
    return ["--preset=smoke", f"--data_dir={data}", f"--out_dir={out}", "--batch_size=32", *extra]


@pytest.fixture(scope="module")
def teacher_out(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher_out")
    train.main(make_config(args(data, out, "--role=teacher")))
    return out


# ----------------------------------------------------------------------------- finished runs and overwrite

def test_finished_run_is_never_replaced_by_accident(data, tmp_path, capsys):
    cfg = make_config(args(data, tmp_path, "--blocks=1", "--method=ce", "--temperature=2"))
    train.main(cfg)
    run = tmp_path / "fashion-mnist_res1_b32_fp32_ce_s0"
    (run / "evaluation.json").write_text("{}")  # a report of these weights
    before = files_of(run)
    again = make_config(args(data, tmp_path, "--blocks=1", "--method=ce", "--temperature=3"))  # same run name
    with pytest.raises(UserError, match="holds a finished run; pass --overwrite=True"):
        train.main(again)
    assert files_of(run) == before  # nothing deleted, nothing rewritten
    line, _ = one_line_exit(train.cli, args(data, tmp_path, "--blocks=1", "--method=ce"), capsys)
    assert "--overwrite=True" in line and "--run_name" in line
    s = train.main(make_config(args(data, tmp_path, "--blocks=1", "--method=ce", "--overwrite=True")))
    assert s["status"] == "complete" and "replacing the finished run" in capsys.readouterr().out
    assert not (run / "evaluation.json").exists()  # the old weights' report went with them


# ----------------------------------------------------------------------------- read-only folders

def test_read_only_out_dir_is_one_line_for_train_sweep_and_evaluate(data, tmp_path, capsys):
    out = tmp_path / "sweep"
    base = args(data, out, "--sweep_blocks=[1]", "--sweep_methods=[]", "--sweep_precisions=[fp32]")
    assert run_experiments.main(make_config(base)) == 0
    student = out / "fashion-mnist_res1_b32_fp32_ce_s0"
    capsys.readouterr()
    with read_only(out):  # a complete sweep reruns: nothing changed, nothing to write
        assert run_experiments.main(make_config(base)) == 0
    (student / "evaluation.json").unlink()
    (out / "results.md").unlink()
    with read_only(out):
        line, stdout = one_line_exit(run_experiments.cli, base, capsys)
        assert line.startswith(f"error: {out}: cannot write there") and "the table above is not saved" in line
        assert "| res1 |" in stdout  # the table is shown even though it cannot be saved
        line, stdout = one_line_exit(evaluate.cli, [f"--run={student}", f"--data_dir={data}"], capsys)
        assert "cannot write there" in line and "evaluation.json is not saved" in line
        assert "test accuracy" in stdout
        line, _ = one_line_exit(train.cli, args(data, out, "--blocks=2", "--method=ce"), capsys)
        assert line.startswith(f"error: {out}") and "cannot write there" in line
        line, _ = one_line_exit(run_experiments.cli, base + ["--sweep_blocks=[2]"], capsys)
        assert "cannot write there" in line
    assert not (student / "evaluation.json").exists() and not (out / "fashion-mnist_res2_b32_fp32_ce_s0").exists()


def test_read_only_teacher_run_caches_logits_under_the_students_out_dir(data, teacher_out, tmp_path, capsys):
    teacher = teacher_out / TEACHER
    before = files_of(teacher)
    with read_only(teacher):
        s = train.main(make_config(args(data, tmp_path, "--blocks=1", "--augment=flip",
                                        f"--teacher_checkpoint={teacher}")))
    err = capsys.readouterr().err
    assert s["status"] == "complete" and "cached" in s["teacher_logits"]
    assert err.count("warning: cannot write the teacher-logit cache") == 1
    assert len(list((tmp_path / "logits_cache").glob("*.safetensors"))) == 2  # identity and flip views
    assert files_of(teacher) == before
    # the next student reads that cache instead of running the teacher again
    s2 = train.main(make_config(args(data, tmp_path, "--blocks=1", "--augment=flip", "--seed=1",
                                     f"--teacher_checkpoint={teacher}")))
    assert s2["status"] == "complete" and "warning" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- teachers that do not fit

def test_teacher_trained_at_another_image_size_is_one_line_naming_both(data, teacher_out):
    with pytest.raises(UserError) as e:
        train.main(make_config(args(data, teacher_out, "--blocks=1", "--image_size=32", "--run_name=s32")))
    msg = str(e.value)
    assert "trained at 28 px, 1 channel(s), 10 classes" in msg and "trains at 32 px" in msg and TEACHER in msg


def test_student_run_given_as_teacher_says_so(data, teacher_out, tmp_path):
    train.main(make_config(args(data, teacher_out, "--blocks=1", "--method=ce", "--run_name=stud")))
    for spec in (teacher_out / "stud", teacher_out / "stud" / "best_model.safetensors"):
        with pytest.raises(UserError) as e:
            train.main(make_config(args(data, tmp_path, "--blocks=1", f"--teacher_checkpoint={spec}")))
        assert "this is a student run (res1, ce); the teacher is" in str(e.value)
        assert str(teacher_out / TEACHER) in str(e.value) and "Missing key" not in str(e.value)


# ----------------------------------------------------------------------------- training inputs

def test_val_fraction_leaving_no_training_images_is_one_line(data, tmp_path):
    with pytest.raises(UserError, match="0 of 120 training image.* at least 2 are needed"):
        train.main(make_config(args(data, tmp_path, "--blocks=1", "--method=ce", "--val_fraction=0.999")))


def test_exploding_loss_warns_about_the_learning_rate(data, tmp_path, capsys):
    s = train.main(make_config(args(data, tmp_path, "--blocks=1", "--method=ce", "--lr=1e6")))
    err = capsys.readouterr().err
    assert s["warnings"] and "--lr=1e+06 is probably too high" in s["warnings"][0]
    assert "warning:" in err and "training loss grew" in err
    calm = train.main(make_config(args(data, tmp_path, "--blocks=1", "--method=ce", "--run_name=calm")))
    assert calm["warnings"] == []


# ----------------------------------------------------------------------------- the sweep redoes broken runs

def test_sweep_redoes_garbage_summaries_and_corrupt_checkpoints_and_skips_a_locked_run(data, tmp_path, capsys):
    import fcntl

    base = make_config(args(data, tmp_path, "--sweep_blocks=[1,2,3,4]", "--sweep_methods=[]"))
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


def test_teacher_held_by_another_process_stops_the_sweep_saying_so(data, tmp_path, capsys):
    import fcntl

    (tmp_path / TEACHER).mkdir()
    fd = os.open(tmp_path / TEACHER / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_experiments.main(make_config(args(data, tmp_path, "--sweep_blocks=[1]"))) == 1
    finally:
        os.close(fd)
    out = capsys.readouterr().out
    assert "in use by" in out and "stopping the sweep" in out
    assert not (tmp_path / "fashion-mnist_res1_b32_fp32_ce_s0").exists()


# ----------------------------------------------------------------------------- the oneDNN crash

def test_smoke_teacher_on_rgb_folder_data_trains_without_crashing(tmp_path):
    # the smoke teacher's Conv2d(4, 8, 1, stride=2) crashed (exit 139, abort or hang) in channels_last backward
    # on an AVX2 EPYC; a subprocess, so a crash or hang fails this test instead of killing the suite
    root = make_imagefolder(tmp_path / "rgb", classes=("a", "b", "c"), per_class=4, size=64)
    r = subprocess.run([sys.executable, "train.py", "--preset=smoke", "--role=teacher", "--dataset=imagefolder",
                        f"--data_dir={root}", f"--out_dir={tmp_path}/out", "--batch_size=4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=180)  # it hung without the rule
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "training in NCHW" in r.stdout
    s = json.loads((tmp_path / "out" / "imagefolder_teacher_seed12" / "summary.json").read_text())
    assert s["status"] == "complete" and s["image_size"] == 64 and s["in_channels"] == 3
