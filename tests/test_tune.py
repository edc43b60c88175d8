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
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--preset=smoke", "--method=kd", "--blocks=1", "--epochs=2", "--max_train_samples=128",
        "--val_fraction=0.01", "--augment=flip", "--teacher_arch=resnet20", f"--teacher_checkpoint={RELEASED_TEACHER}",
        "--params=temperature,kd_weight", "--study=t", "--tensorboard=False"]


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
