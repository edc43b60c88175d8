"""Config guards from a hostile user's probe (issue 33): run names the sweep owns in out_dir, recipe files that
reach past how a run learns, seeds torch and numpy cannot take, and flags that would be silently ignored."""
import dataclasses
import json

import pytest

import tune
from config import PRESETS, RECIPES, Config, make_config
from tests.fixtures import run_script
from utils.errors import UserError
from utils.lock import TABLE_LOCK_FILE
from utils.tensorboard import HPARAMS_DIR


def one_line(r) -> str:
    """The one stderr line of a script run (run_script) that must exit 2, never a traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# ----------------------------------------------------------------------------- 1. names the sweep owns

@pytest.mark.parametrize("name", [HPARAMS_DIR, "tb_hparams.json", "plots", "logits_cache", "results.csv",
                                  "results.md", TABLE_LOCK_FILE, "Plots", "tune_kd_res4.db", "t.best.json",
                                  "scale.md", "n500", "all"])
def test_a_run_name_is_never_a_name_the_sweep_or_tune_writes_in_out_dir(name):
    with pytest.raises(UserError) as e:
        make_config([f"--run_name={name}"])
    assert str(e.value).startswith(f"--run_name={name}: ") and "pick another" in str(e.value)


def test_a_reserved_run_name_is_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    line = one_line(run_script("train.py", "--preset=smoke", f"--out_dir={out}", "--run_name=tb_hparams"))
    assert line == ("error: --run_name=tb_hparams: out_dir/tb_hparams is the sweep's own (its TensorBoard hparams "
                    "table, rebuilt whole by every sweep); pick another --run_name")
    assert not out.exists()


def test_derived_and_ordinary_run_names_stay_allowed():
    assert make_config(["--run_name=plots2", "--run_name=my.results"]).run_name == "my.results"
    assert make_config([]).run_name == ""


# ----------------------------------------------------------------------------- 3. recipe files

def recipe(tmp_path, fields: dict) -> str:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"fields": fields}))
    return str(path)


@pytest.mark.parametrize("fields,names", [({"overwrite": True}, "overwrite"),
                                          ({"out_dir": "/elsewhere", "lr": 0.1}, "out_dir"),
                                          ({"resume": True, "run_name": "x"}, "resume, run_name"),
                                          ({"dataset": "cifar10"}, "dataset"), ({"seed": 3}, "seed"),
                                          ({"teacher_checkpoint": "t.pt"}, "teacher_checkpoint")])
def test_a_recipe_file_sets_how_a_run_learns_only(fields, names, tmp_path):
    path = recipe(tmp_path, fields)
    with pytest.raises(UserError) as e:
        make_config([f"--recipe=@{path}"])
    assert str(e.value).startswith(f"--recipe=@{path}: sets {names}, which a recipe may not:"), str(e.value)


def test_a_bad_value_in_a_recipe_file_names_the_file_and_the_key(tmp_path):
    path = recipe(tmp_path, {"temperature": "hot"})
    with pytest.raises(UserError) as e:
        make_config([f"--recipe=@{path}"])
    assert str(e.value) == f"--recipe=@{path}: field temperature='hot': expected float"
    path = recipe(tmp_path, {"temperature": 0})
    with pytest.raises(UserError, match=r"r\.json: field temperature=0: must be > 0"):
        make_config([f"--recipe=@{path}", "--temperature=2"])  # a bad file is bad even where a flag overrides it


def test_every_named_recipe_and_every_tuned_field_can_be_a_recipe_file(tmp_path):
    for name, fields in RECIPES.items():
        cfg = make_config([f"--recipe=@{recipe(tmp_path, fields)}"])
        assert all(getattr(cfg, k) == (tuple(v) if isinstance(v, list) else v) for k, v in fields.items()), name
    learns = {f.name for f in dataclasses.fields(Config) if f.metadata["recipe"]}
    assert set(tune.SPACE) <= learns
    assert {"method", "temperature", "optimizer", "lr", "schedule", "epochs", "augment", "batch_size"} <= learns
    assert not learns & {"overwrite", "out_dir", "run_name", "resume", "dataset", "seed", "teacher_checkpoint"}


# ----------------------------------------------------------------------------- 4. seeds

@pytest.mark.parametrize("arg", [f"--seed={2 ** 64}", f"--seed={2 ** 32}", "--seed=-1", f"--first_seed={2 ** 64}"])
def test_a_seed_outside_what_torch_and_numpy_take_is_one_line(arg):
    r = run_script("train.py", "--preset=smoke", arg)
    assert one_line(r) == f"error: {arg}: must be in 0..4294967295 (2**32 - 1: numpy's seed range)"


def test_the_sweeps_last_seed_stays_in_range():
    assert make_config([f"--first_seed={2 ** 32 - 3}", "--seeds=3"]).first_seed == 2 ** 32 - 3
    with pytest.raises(UserError) as e:
        make_config([f"--first_seed={2 ** 32 - 3}", "--seeds=4"])
    assert str(e.value) == ("--first_seed=4294967293 --seeds=4: the last seed, 4294967296, is past 4294967295 "
                            "(2**32 - 1: numpy's seed range)")


# ----------------------------------------------------------------------------- 6. flags that would be ignored

@pytest.mark.parametrize("args,message", [
    (["--teacher_weights=missing.pth"], "--teacher_weights=missing.pth: read only with --teacher_pretrained=True "
                                        "(the weights a pretrained teacher starts from); pass both, or neither"),
    (["--qat_epochs=3"], "--qat_epochs=3: a QAT run's epochs; pass --qat=int8|int4|ternary|binary (or the sweep's "
                         "--sweep_qat), or leave it out"),
    (["--qat_lr=0.01"], "--qat_lr=0.01: a QAT run's learning rate; pass --qat=int8|int4|ternary|binary (or the "
                        "sweep's --sweep_qat), or leave it out"),
    (["--transfer_epochs=4"], "--transfer_epochs=4: the epochs of the sweep's runs with a transfer set; pass "
                              "--unlabeled_samples (with --max_train_samples), or leave it out"),
])
def test_a_flag_that_would_be_ignored_is_refused(args, message):
    with pytest.raises(UserError) as e:
        make_config(args)
    assert str(e.value) == message


def test_those_flags_are_taken_where_they_apply():
    make_config(["--teacher_arch=resnet18", "--teacher_pretrained=True", "--teacher_weights=r18.pth"])
    make_config(["--qat=int4", "--qat_epochs=3", "--qat_lr=0.01"])
    make_config(["--sweep_qat=[int4]", "--qat_epochs=3", "--qat_lr=0.01"])
    make_config(["--unlabeled_samples=100", "--max_train_samples=100", "--transfer_epochs=4"])
    for name in PRESETS:
        make_config([f"--preset={name}"])
    # the runtime's own configs (a teacher of a QAT run, the sweep's teacher and controls) are no command line
    qat = make_config(["--qat=int4", "--qat_epochs=3", "--teacher_pretrained=True", "--teacher_weights=w.pth",
                       "--unlabeled_samples=100", "--max_train_samples=100", "--transfer_epochs=4"])
    assert dataclasses.replace(qat, qat="none", teacher_pretrained=False, unlabeled_samples=0).qat_epochs == 3


@pytest.mark.parametrize("arg,message", [
    ("--qat_epochs=1000000000", "--qat_epochs=1000000000: must be in 0..100000 (0 = epochs)"),
    ("--epochs=1000000000", "--epochs=1000000000: must be in 1..100000"),
    ("--epochs=0", "--epochs=0: must be in 1..100000"),
])
def test_epoch_counts_have_a_sane_bound(arg, message):
    with pytest.raises(UserError) as e:
        make_config([arg, "--qat=int4"])
    assert str(e.value) == message
    assert make_config(["--qat=int4", "--qat_epochs=100000", "--epochs=100000"]).qat_epochs == 100000
