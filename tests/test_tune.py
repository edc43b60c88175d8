"""tune.py: an Optuna study on the validation split that survives a kill, and a best-recipe file the sweep takes."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import run_experiments
import tune
from config import RELEASED_TEACHER, make_config
from tests.fixtures import one_line, read_only, run_script, small_run_args
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ARGS = small_run_args(method="kd", blocks=1, epochs=2, max_train_samples=128, val_fraction=0.01, augment="flip",
                      teacher_arch="resnet20", teacher_checkpoint=RELEASED_TEACHER, params="temperature,kd_weight",
                      study="t", tensorboard=False)


def complete_trials(db: Path) -> list:
    if not db.exists():
        return []
    try:
        study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    except KeyError:  # the study is being created
        return []
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.mark.slow
def test_a_killed_tune_keeps_its_trials_and_its_recipe_feeds_the_sweep(tmp_path):
    args = ARGS + [f"--out_dir={tmp_path}", "--trials=3"]
    db = tmp_path / "t.db"
    proc = subprocess.Popen([sys.executable, "tune.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not complete_trials(db) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = complete_trials(db)
    assert 1 <= len(first) < 3, "the tune finished before it could be killed"
    r = subprocess.run([sys.executable, "tune.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{len(first)} trial(s) already in the study" in r.stdout
    after = complete_trials(db)
    assert len(after) >= 3
    assert [t.params for t in after[:len(first)]] == [t.params for t in first]  # kept, not redone
    recipe = json.loads((tmp_path / "t.best.json").read_text())
    best = max(after, key=lambda t: t.value)
    assert recipe["fields"] == best.params and recipe["val_acc"] == best.value
    assert recipe["seeds"] == [tune.TUNE_FIRST_SEED]
    # every trial selected on val, on a tuning seed, in the study's own folder
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "t").glob("*/summary.json")]  # the killed one has none
    assert len(summaries) >= 3
    assert all(s["selected_on"] == "val" and s["seed"] >= tune.TUNE_FIRST_SEED for s in summaries)
    # the sweep takes the file as a recipe: its KD students get the tuned values
    grid = run_experiments.grid(make_config(["--preset=smoke", f"--recipe=@{tmp_path / 't.best.json'}",
                                             "--sweep_methods=[kd]", "--sweep_precisions=[fp32]"]))
    kd = [c for c in grid if c.method == "kd"]
    assert kd and all((c.temperature, c.kd_weight) == (best.params["temperature"], best.params["kd_weight"])
                      for c in kd)


@pytest.mark.parametrize("extra,message", [
    (["--params=dkd_beta"], "a hyper-parameter of dkd, not of --method=kd"),
    (["--params=colour"], "not tunable here"),
    (["--params="], "name the fields to tune"),
    (["--val_fraction=0"], "never the test split"),
    (["--trials=0"], "whole number"),
    (["--first_seed=99", "--seeds=3"], "where the tuning seeds start"),
])
def test_bad_tune_flags_are_one_line(extra, message, tmp_path):
    with pytest.raises(UserError, match=message):
        tune.main(ARGS + [f"--out_dir={tmp_path}", "--trials=1"] + extra)


def test_a_bad_recipe_file_is_one_line(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"fields": {"temprature": 2}}')
    with pytest.raises(UserError, match="unknown config fields temprature"):
        make_config([f"--recipe=@{bad}"])
    with pytest.raises(UserError, match="cannot read a JSON recipe"):
        make_config([f"--recipe=@{tmp_path / 'missing.json'}"])


# ----------------------------------------------------------------------------- issue 33: a hostile user's probe

BASE = [a for a in ARGS if not a.startswith("--study=")]


def fake_training(calls: list, seconds: float = 0.0):
    """train.main as tune.py calls it, without training: it finds the teacher as a run would, then scores
    the trial by its temperature."""
    from runtime.teacher import resolve_teacher_path

    def main(cfg, on_epoch=None):
        resolve_teacher_path(cfg)
        calls.append(cfg)
        time.sleep(seconds)
        return {"best_val_acc": 50.0 + cfg.temperature}
    return main


@pytest.mark.parametrize("study", ["../x", "ABS", "a?mode=memory", "a/b", "..", "plots", "tb_hparams"])
def test_a_study_name_is_checked_like_a_run_name(study, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tune.train, "main", fake_training(calls))
    out = tmp_path / "out"
    study = str(tmp_path / "elsewhere") if study == "ABS" else study
    with pytest.raises(UserError) as e:
        tune.main(BASE + [f"--out_dir={out}", "--trials=1", f"--study={study}"])
    assert str(e.value).startswith(f"--study={study}: ") and ("not a path" in str(e.value)
                                                               or "pick another" in str(e.value))
    assert not calls and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_study_folder_that_holds_a_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tune.train, "main", fake_training([]))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"/t is a run directory; pass another --study"):
        tune.main(ARGS + [f"--out_dir={tmp_path}", "--trials=1"])


@pytest.mark.parametrize("kind,says", [("text", "not an Optuna study file (SQLite)"),
                                       ("folder", "a folder, not an Optuna study file (SQLite)"),
                                       ("torn", "cannot open the study")])
def test_a_study_file_that_is_no_sqlite_database_is_one_line(kind, says, tmp_path, monkeypatch):
    monkeypatch.setattr(tune.train, "main", fake_training([]))
    db = tmp_path / "t.db"
    if kind == "folder":
        db.mkdir()
    else:
        db.write_bytes(b"a hostile user's notes\n" * 10 if kind == "text" else b"SQLite format 3\x00" + b"\x07" * 200)
    line = one_line(run_script("tune.py", *ARGS, f"--out_dir={tmp_path}", "--trials=1"))
    assert line.startswith(f"error: {db}: {says}"), line


def test_a_read_only_out_dir_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(tune.train, "main", fake_training([]))
    out = tmp_path / "out"
    out.mkdir()
    with read_only(out):
        line = one_line(run_script("tune.py", *ARGS, f"--out_dir={out}", "--trials=1"))
    assert line.startswith(f"error: {out}: cannot write there (") and "pass a writable --out_dir" in line


def test_without_a_teacher_the_tune_stops_before_the_first_trial(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tune.train, "main", fake_training(calls))
    args = [a for a in ARGS if not a.startswith("--teacher_checkpoint=")]
    line = one_line(run_script("tune.py", *args, f"--out_dir={tmp_path}", "--trials=2"))
    assert line.startswith(f"error: {tmp_path}/fashion-mnist_teacher_resnet20: no teacher run or weights file")
    assert not calls
    # the teacher run in --out_dir (where the sweep trains it) is the one every trial learns from
    import shutil
    shutil.copytree(ROOT / RELEASED_TEACHER, tmp_path / "fashion-mnist_teacher_resnet20")
    tune.main(args + [f"--out_dir={tmp_path}", "--trials=2"])
    assert len(calls) == 2 and all(c.teacher_checkpoint == str(tmp_path / "fashion-mnist_teacher_resnet20")
                                   for c in calls)


def test_trials_means_trials_in_the_study_across_processes(tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(tune.train, "main", fake_training([], seconds=0.3))
    args = ARGS + [f"--out_dir={tmp_path}", "--trials=5"]
    procs = [multiprocessing.get_context("fork").Process(target=tune.cli, args=(args,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 5
    assert len(study.trials) == 5


def test_a_trial_whose_process_died_is_failed_and_not_counted(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tune.train, "main", fake_training(calls))
    args = ARGS + [f"--out_dir={tmp_path}", "--trials=2"]
    tune.main(args[:-1] + ["--trials=1"])
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    orphan = study.ask()  # as a killed tune.py leaves it: RUNNING, its process gone
    tune.main(args)
    states = [t.state for t in optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}").trials]
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2 and len(calls) == 2


def test_the_study_file_is_the_one_named_whatever_out_dir_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(tune.train, "main", fake_training([]))
    out = tmp_path / "a?mode=memory {x}%41"
    tune.main(ARGS + [f"--out_dir={out}", "--trials=1"])
    assert (out / "t.db").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
