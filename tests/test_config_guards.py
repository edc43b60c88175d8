"""What the config refuses before anything runs: hyper-parameters outside their ranges, image sizes a student
cannot stride, run names that leave out_dir or that the sweep owns, recipe files that reach past how a run
learns, seeds torch and numpy cannot take, and flags that would be silently ignored."""
import dataclasses
import json
import time

import pytest

import run_experiments
import train
import tune
from config import PRESETS, RECIPES, Config, make_config
from tests.fixtures import one_line, one_line_exit, run_script, small_run_args
from utils.errors import UserError
from utils.run_files import HPARAMS_DIR, TABLE_LOCK_FILE


# ----------------------------------------------------------------------------- ranges and sizes

@pytest.mark.parametrize("arg,why", [
    ("--temperature=-1", "> 0"), ("--temperature=0", "> 0"), ("--alpha=1.5", "[0, 1]"), ("--alpha=-0.1", "[0, 1]"),
    ("--dkd_beta=-1", "negative"), ("--dkd_alpha=-2", "negative"), ("--lr=-1", "> 0"), ("--lr=0", "> 0"),
    ("--lr=inf", "finite"), ("--lr=nan", "finite"), ("--temperature=inf", "finite"), ("--momentum=1.0", "[0, 1)"),
    ("--weight_decay=-0.1", "negative"), ("--max_train_samples=1", "at least 2"), ("--val_fraction=1.0", "[0, 1)")])
def test_every_hyper_parameter_has_its_range(arg, why):
    with pytest.raises(UserError) as e:
        make_config([arg])
    msg = str(e.value)
    assert msg.startswith(arg.split("=")[0]) and why in msg and "expected float" not in msg, msg


def test_ranges_are_checked_before_any_data_loads(tmp_path, capsys):
    err, _ = one_line_exit(train.cli, ["--temperature=0", f"--data_dir={tmp_path}/nowhere", "--dataset=intel",
                                       f"--out_dir={tmp_path}/out"], capsys)
    assert "--temperature=0" in err and "nowhere" not in err
    assert not (tmp_path / "out").exists()


def test_edge_values_inside_the_ranges_are_accepted():
    cfg = make_config(["--alpha=0", "--temperature=0.5", "--lr=1e6", "--max_train_samples=2", "--momentum=0"])
    assert cfg.alpha == 0.0 and cfg.lr == 1e6 and make_config(["--alpha=1"]).alpha == 1.0


def test_fitnet_stage_takes_minus_one_or_an_index():
    with pytest.raises(UserError, match="-1 .* or a stage index"):
        make_config(["--fitnet_stage=-5"])
    assert make_config(["--fitnet_stage=-1"]).fitnet_stage == -1 and make_config(["--fitnet_stage=0"]).fitnet_stage == 0


def test_image_size_below_what_the_student_strides_need_stops_before_data(tmp_path):
    from models.cnn_model import min_image_size

    assert [min_image_size(b) for b in (0, 2, 4, 6, 8, 10, 12)] == [8, 8, 8, 8, 9, 17, 33]
    for argv, needle in ((["--image_size=3"], "--image_size=3: too small"),
                         (["--image_size=16", "--blocks=10"], "needs at least 17 px"),
                         (["--blocks=12"], "native 28 px: too small for a res12")):
        with pytest.raises(UserError, match=needle):
            train.main(make_config(argv, data_dir=str(tmp_path / "none"), out_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- run names

@pytest.mark.parametrize("name", ["../x", ".", "..", "/any/other/folder", "a/b"])
def test_a_run_name_never_leaves_out_dir(name, tmp_path, capsys):
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text('{"keep": true}')
    run_name = str(elsewhere) if name.startswith("/") else name
    argv = small_run_args(None, f"{tmp_path}/runs", "--method=ce", f"--run_name={run_name}", max_train_samples=128,
                          max_test_samples=64, epochs=1, augment="flip")
    err, _ = one_line_exit(train.cli, argv, capsys)
    assert "--run_name" in err and "not a path" in err
    assert (elsewhere / "summary.json").read_text() == '{"keep": true}' and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- names the sweep owns

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


# ----------------------------------------------------------------------------- recipe files

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


# ----------------------------------------------------------------------------- seeds

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


# ----------------------------------------------------------------------------- flags that would be ignored

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


def test_an_unreachable_ray_address_is_one_line_within_a_minute(capsys):
    """Kept out of test_scale.py: its module-wide local Ray would answer instead of the address."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    t0 = time.monotonic()
    argv = small_run_args(None, "/tmp/unused-ray-probe", "--launcher=ray", "--ray_address=127.0.0.1:1",
                          max_train_samples=128, max_test_samples=64, epochs=1, augment="flip")
    err, _ = one_line_exit(run_experiments.cli, argv, capsys)
    assert time.monotonic() - t0 < 60 and "--ray_address=127.0.0.1:1" in err and "no Ray cluster answers" in err
