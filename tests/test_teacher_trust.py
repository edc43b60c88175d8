"""A teacher is what its record says (issue 33): a finished run records the sha256 of its weights, a teacher
whose weights differ from that record, whose run failed, or whose weights score far below the validation
accuracy it recorded is refused with one line; teachers/release.py releases only finished teacher runs,
only into teachers/<run name>/, checks the size first and swaps the folder in whole.
A teacher run trained at another image size, or a student run given as a teacher, is one line naming both.
Tiny idx data (120 train images, 24 held out), 1 epoch, the shared smoke teachers: seconds per run."""
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch

import train
from config import make_config
from data.dataset import load_dataset
from models.teacher_arch import build_teacher
from runtime.teacher import load_frozen_teacher
from tests.fixtures import copy_run, load_script, one_line_exit, small_run_args
from utils.atomic import read_json_object
from utils.checkpoint import save_weights
from utils.errors import UserError
from utils.run_files import DIGEST_KEY, DIGESTED_FILES, failed_summary, file_digests, read_summary, write_summary

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "fashion-mnist_teacher_seed12"
release = load_script("teachers/release.py")


args = partial(small_run_args, batch_size=32, val_fraction=0.2)  # on fashion_idx, as the teacher trained


@pytest.fixture
def teacher(smoke_teacher):
    """The shared smoke teacher trained with this module's hold-out (read only)."""
    return smoke_teacher("--val_fraction=0.2")


@pytest.fixture
def copy(teacher, tmp_path):
    """A copy of the finished teacher run, under a folder of the same name, to spoil."""
    return copy_run(teacher, tmp_path / "copy", skip=("logits_cache",))


def untrained_weights(run_dir: Path, name: str = "best_model.safetensors") -> None:
    """The run's architecture, freshly initialised, saved over its weights file (loads, but is wrong)."""
    cfg = make_config([f"--{k}={v}" for k, v in read_json_object(str(run_dir / "config.json")).items()
                       if k in ("teacher_arch", "teacher_width", "dataset")])
    torch.manual_seed(123)
    save_weights(build_teacher(cfg, 1, 10), run_dir / name)


def student(fashion_idx, out, teacher_spec, *extra) -> list:
    return args(fashion_idx, out, "--blocks=1", f"--teacher_checkpoint={teacher_spec}", *extra)


# ----------------------------------------------------------------------------- digests

def test_a_finished_run_records_the_sha256_of_its_weights(teacher):
    recorded = read_summary(teacher)[DIGEST_KEY]
    assert set(recorded) == {"best_model.safetensors", "model.safetensors"}
    assert recorded == file_digests(teacher, DIGESTED_FILES)


@pytest.mark.parametrize("how", ["truncated", "untrained", "swapped"])
def test_a_changed_teacher_weights_file_is_one_line(how, fashion_idx, copy, smoke_teacher, tmp_path, capsys):
    weights = copy / "best_model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "untrained":
        untrained_weights(copy)
    else:  # another run's weights of the same architecture: the teacher at seed 1 (the smoke preset's 1 epoch)
        shutil.copyfile(smoke_teacher("--val_fraction=0.2", "--seed=1") / "best_model.safetensors", weights)
    for spec in (copy, weights):
        line, _ = one_line_exit(train.cli, student(fashion_idx, tmp_path / "s", spec), capsys)
        assert str(weights) in line and "sha256" in line and "its run's summary.json records" in line, line
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").rglob("summary.json"))


def test_evaluate_refuses_a_run_whose_weights_changed_after_it_finished(fashion_idx, copy, capsys):
    import evaluate

    untrained_weights(copy)  # a teacher run is a run like any other: evaluate.py reads its best_model
    line, _ = one_line_exit(evaluate.cli, [f"--run={copy}", f"--data_dir={fashion_idx}"], capsys)
    assert str(copy / "best_model.safetensors") in line and "sha256" in line, line


def test_release_check_catches_changed_weights(copy, capsys):
    untrained_weights(copy, "model.safetensors")  # not the file students load: --check still sees it
    line, _ = one_line_exit(release.cli, ["--check", str(copy)], capsys)
    assert str(copy / "model.safetensors") in line and "sha256" in line, line


def test_a_run_without_digests_still_loads_as_a_teacher(fashion_idx, copy):
    s = read_summary(copy)
    del s[DIGEST_KEY]
    write_summary(copy, s)  # as every run finished before digests were recorded
    cfg = make_config(student(fashion_idx, copy.parent, copy))
    teacher, info = load_frozen_teacher(cfg, 1, 10, "cpu", 28)
    assert info["teacher_weights"] == str(copy / "best_model.safetensors")


def test_a_failed_teacher_run_is_refused(fashion_idx, copy, tmp_path, capsys):
    write_summary(copy, failed_summary(error="RuntimeError: out of memory", run_name=TEACHER, role="teacher",
                                       dataset="fashion-mnist", blocks=None, arch="seed12", precision="fp32",
                                       method="ce", seed=0))
    for spec in (copy, copy / "best_model.safetensors"):
        line, _ = one_line_exit(train.cli, student(fashion_idx, tmp_path / "s", spec), capsys)
        assert "failed" in line and "RuntimeError: out of memory" in line and str(copy) in line, line


# ----------------------------------------------------------------------------- measured on the hold-out

def test_a_teacher_far_below_its_recorded_val_accuracy_is_refused(fashion_idx, copy):
    s = read_summary(copy)
    del s[DIGEST_KEY]  # an older run, or a record edited with its weights: no digest to catch it
    s["best_val_acc"] = 100.0
    write_summary(copy, s)
    untrained_weights(copy)
    cfg = make_config(student(fashion_idx, copy.parent, copy))
    ds = load_dataset(cfg)
    with pytest.raises(UserError) as e:
        load_frozen_teacher(cfg, ds.in_channels, ds.num_classes, "cpu", ds.image_size, data=ds)
    line = str(e.value)
    assert "\n" not in line and str(copy) in line and "100.00% in its summary.json" in line, line
    assert "24 validation images" in line, line


def test_a_genuine_teacher_measures_its_recorded_val_accuracy(fashion_idx, teacher, tmp_path):
    cfg = make_config(student(fashion_idx, tmp_path, teacher))
    ds = load_dataset(cfg)
    teacher_model, info = load_frozen_teacher(cfg, ds.in_channels, ds.num_classes, "cpu", ds.image_size, data=ds)
    assert info["teacher_acc"] == read_summary(teacher)["best_test_acc"]


# ----------------------------------------------------------------------------- teachers that do not fit
# (the smoke teacher and its students without a hold-out)

def test_teacher_trained_at_another_image_size_is_one_line_naming_both(fashion_idx, smoke_teacher, tmp_path):
    teacher = copy_run(smoke_teacher(), tmp_path)  # the default teacher of out_dir tmp_path
    with pytest.raises(UserError) as e:
        train.main(make_config(small_run_args(fashion_idx, tmp_path, "--blocks=1", "--image_size=32", "--run_name=s32",
                                              batch_size=32)))
    msg = str(e.value)
    assert "trained at 28 px, 1 channel(s), 10 classes" in msg and "trains at 32 px" in msg and teacher.name in msg


def test_student_run_given_as_teacher_says_so(fashion_idx, smoke_teacher, tmp_path):
    out = tmp_path / "runs"
    teacher = copy_run(smoke_teacher(), out)
    train.main(make_config(small_run_args(fashion_idx, out, "--blocks=1", "--method=ce", "--run_name=stud",
                                          batch_size=32)))
    for spec in (out / "stud", out / "stud" / "best_model.safetensors"):
        with pytest.raises(UserError) as e:
            train.main(make_config(small_run_args(fashion_idx, tmp_path / "s", "--blocks=1",
                                                  f"--teacher_checkpoint={spec}", batch_size=32)))
        assert "this is a student run (res1, ce); the teacher is" in str(e.value)
        assert str(teacher) in str(e.value) and "Missing key" not in str(e.value)


# ----------------------------------------------------------------------------- release

@pytest.fixture
def teachers(tmp_path, monkeypatch):
    """release.py's teachers/ folder, redirected to a temporary one (room for the smoke teacher's 15 MB)."""
    home = tmp_path / "teachers"
    home.mkdir()
    monkeypatch.setattr(release, "HERE", home)
    monkeypatch.setattr(release, "MAX_BYTES", 10 * release.MAX_BYTES)
    return home


def test_a_release_records_digests_and_loads_as_a_teacher(fashion_idx, teacher, teachers, tmp_path, capsys):
    dest = release.release(str(teacher))
    assert dest == teachers / TEACHER
    s = read_summary(dest)
    assert s["release"][DIGEST_KEY] == file_digests(dest, DIGESTED_FILES) == read_summary(teacher)[DIGEST_KEY]
    assert sorted(p.name for p in teachers.iterdir()) == [TEACHER]  # no temporary folder left
    load_frozen_teacher(make_config(student(fashion_idx, tmp_path, dest)), 1, 10, "cpu", 28)


def test_a_release_never_leaves_teachers(copy, teachers, tmp_path, capsys):
    (copy / "tb").mkdir(exist_ok=True)
    outside = sorted(p.name for p in tmp_path.iterdir())
    dest = release.release(f"{copy}/tb/..")
    assert dest == teachers / TEACHER and (dest / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == outside  # nothing written beside teachers/
    line, _ = one_line_exit(release.cli, ["--release", str(dest)], capsys)  # a released teacher onto itself
    assert "already a released teacher" in line, line


def test_a_student_run_is_not_released(fashion_idx, teacher, teachers, tmp_path, capsys):
    train.main(make_config(args(fashion_idx, tmp_path / "runs", "--blocks=1", "--method=ce")))
    run = tmp_path / "runs" / "fashion-mnist_res1_b32_fp32_ce_s0"
    line, _ = one_line_exit(release.cli, ["--release", str(run)], capsys)
    assert "student run" in line and "only a teacher run" in line, line
    assert list(teachers.iterdir()) == []


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_refused_release_leaves_the_previous_release_intact(copy, teachers, monkeypatch, capsys):
    dest = release.release(str(copy))
    before = _files(dest)
    (copy / "training_summary.txt").write_text("a retrained teacher\n" * 1000)
    # too big even without the last epoch's weights (which a release leaves out first)
    monkeypatch.setattr(release, "MAX_BYTES", sum(len(b) for n, b in before.items() if n != "model.safetensors"))
    line, _ = one_line_exit(release.cli, ["--release", str(copy)], capsys)
    assert "over the" in line and "a released teacher may take" in line, line
    assert _files(dest) == before and sorted(p.name for p in teachers.iterdir()) == [TEACHER]


def test_a_release_over_the_size_leaves_the_last_epochs_weights_out_and_says_so(copy, teachers, monkeypatch,
                                                                                 fashion_idx, tmp_path):
    files = {p.name: p.stat().st_size for p in copy.iterdir() if p.name in release.RELEASED_FILES}
    monkeypatch.setattr(release, "MAX_BYTES", sum(files.values()) - files["model.safetensors"] // 2)
    dest = release.release(str(copy))
    assert not (dest / "model.safetensors").exists() and (dest / "best_model.safetensors").is_file()
    s = read_summary(dest)
    assert "model.safetensors left out" in s["release"]["note"] and s["release"]["bytes"] <= release.MAX_BYTES
    assert set(s["release"][DIGEST_KEY]) == {"best_model.safetensors"}  # what it holds, each file checked
    load_frozen_teacher(make_config(student(fashion_idx, tmp_path, dest)), 1, 10, "cpu", 28)


def test_an_interrupted_release_leaves_the_previous_release_intact(copy, teachers, monkeypatch):
    dest = release.release(str(copy))
    before = _files(dest)
    (copy / "training_summary.txt").write_text("a retrained teacher\n")
    real, copied = shutil.copyfile, []

    def copy_then_stop(src, dst, **kw):  # killed while copying the last file
        copied.append(Path(src).name)
        if copied[-1] == "training_summary.txt":
            raise KeyboardInterrupt
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copyfile", copy_then_stop)
    with pytest.raises(KeyboardInterrupt):
        release.release(str(copy))
    assert "best_model.safetensors" in copied
    assert _files(dest) == before and sorted(p.name for p in teachers.iterdir()) == [TEACHER]
