import subprocess
import sys
from pathlib import Path

import pytest

from config import Config, make_config, parse_overrides
from tests.fixtures import load_script, run_script
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_literals_strings_and_presets():
    cfg = make_config(["--preset=smoke", "--blocks=6", "--fc_layers=[32, 16]", "--lr=1e-2", "--run_name=123"])
    assert cfg.blocks == 6 and cfg.fc_layers == (32, 16) and cfg.lr == 0.01 and cfg.run_name == "123"
    assert cfg.max_train_samples == 256  # from the preset
    assert make_config(["--sweep_precisions=fp8"]).sweep_precisions == ("fp8",)
    assert make_config(["--sweep_precisions=[fp32,fp8]"]).sweep_precisions == ("fp32", "fp8")
    assert make_config(["--sweep_blocks=[4, 6]"]).sweep_blocks == (4, 6)


def test_bools_take_either_spelling():
    assert make_config(["--resume=true", "--overwrite=FALSE"]).resume is True
    assert make_config(["--ray_shared_fs=false"]).ray_shared_fs is False
    assert make_config(["--run_name=true"]).run_name == "true"  # a string field stays a string


def test_an_empty_list_value_is_an_empty_tuple():
    cfg = make_config(["--sweep_methods=", "--deploy_variants= ", "--fc_layers=", "--sweep_qat=[]"])
    assert cfg.sweep_methods == cfg.deploy_variants == cfg.fc_layers == cfg.sweep_qat == ()


def test_a_sweep_without_depths_stops_before_the_teacher(tmp_path):
    r = run_script("run_experiments.py", "--preset=smoke", "--sweep_blocks=[]", f"--out_dir={tmp_path}")
    assert r.returncode == 2 and "--sweep_blocks" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_config_is_frozen():
    import dataclasses
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.blocks = 8
    assert dataclasses.replace(cfg, blocks=8).blocks == 8 and cfg.blocks == 4


@pytest.mark.parametrize("arg,needle", [("--precision=fp7", "precision"), ("--blocks=many", "blocks"),
                                        ("--nope=1", "nope"), ("--preset=huge", "preset"),
                                        ("--blocks=0", "blocks"), ("--lr=fast", "lr"), ("blocks=4", "blocks=4"),
                                        ("--sweep_methods=[\"kd\",\"xx\"]", "sweep_methods"),
                                        ("--resume=1", "True or False"), ("--lr=", "--lr='': expected float")])
def test_bad_values_raise_user_error(arg, needle):
    with pytest.raises(UserError, match=needle):
        parse_overrides([arg]) and make_config([arg])


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "run_experiments.py", "plot_experiment_results.py",
                                    "tune.py"])
def test_cli_bad_value_exits_2_with_one_line(script):
    r = run_script(script, "--precision=fp7")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "precision" in lines[0] and "fp32" in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_bad_value_in_a_fresh_interpreter_exits_2_with_one_line():
    r = subprocess.run([sys.executable, "train.py", "--precision=fp7"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "precision" in lines[0] and "fp32" in lines[0]
    assert "Traceback" not in r.stderr


def test_docs_config_md_is_generated_from_the_schema():
    import dataclasses
    doc = load_script("docs/config_doc.py")
    text = (ROOT / "docs" / "config.md").read_text()
    assert text == doc.render(), "docs/config.md is stale: run python docs/config_doc.py"
    # every field has its row, with the doc and check its declaration gives it
    for f in dataclasses.fields(Config):
        assert f.metadata["doc"] and f"| `{f.name}` |" in text, f.name
    assert ("| `select_from` | `0.0` | train | in [0, 1) (the share of the epochs that are not evaluated; the last "
            "always is) | share of the epochs before the first evaluation") in text


def test_each_field_is_declared_once_with_its_check_and_group():
    import dataclasses
    from config import DEPLOY_VARIANTS
    # the fields students must share to train together (cli.group_key), as GROUP_FIELDS listed them
    assert set(Config.group_fields()) == {
        "dataset", "data_dir", "image_size", "max_train_samples", "unlabeled_samples", "max_test_samples",
        "val_fraction", "augment", "random_erasing", "batch_size", "seed", "device", "out_dir", "teacher_arch",
        "teacher_width", "teacher_checkpoint", "teacher_logits", "teacher_precision", "eval_batch_size", "task",
        "scene_count", "scene_test_count", "scene_canvas", "scene_items"}
    checks = {f.name: f.metadata["check"] for f in dataclasses.fields(Config)}
    assert checks["deploy_variants"].says == f"allowed values are {', '.join(DEPLOY_VARIANTS)}"
    assert checks["run"] is None and checks["blocks"].says == "must be in 1..64"


@pytest.mark.parametrize("arg,message", [
    ("--blocks=0", "--blocks=0: must be in 1..64"),
    ("--epochs=0", "--epochs=0: must be in 1..100000"),
    ("--seed=-1", "--seed=-1: must be in 0..4294967295 (2**32 - 1: numpy's seed range)"),
    ("--random_erasing=1.5", "--random_erasing=1.5: must be in [0, 1]"),
    ("--augment=rot", "--augment=rot: allowed values are none, flip, crop+flip"),
    ("--lr=nan", "--lr=nan: must be a finite number"),
    ("--width=wide", "--width='wide': expected int"),
    ("--fc_layers=[0]", "--fc_layers=(0,): expected a list of positive ints, e.g. [128]"),
    ("--sweep_precisions=[fp7]", "--sweep_precisions=('fp7',): allowed values are fp32, fp16, bf16, fp8, auto"),
    ("--device=tpu", "--device=tpu: allowed values are auto, cpu, cuda, cuda:N, mps"),
    ("--teacher_arch=wrn17_4", "--teacher_arch=wrn17_4: allowed values are seed12, resnet20, resnet32, resnet44, "
                               "resnet56, resnet110, wrn{depth}_{k}, resnet18, resnet50, efficientnet_b0, "
                               "resseg{blocks}_{width}, timm:<name> (depth 6n+4, e.g. wrn16_4; resseg6_24)"),
    ("--run_name=../x", "--run_name=../x: must be a plain folder name (letters, digits, . _ - +), not a path; \"\" = "
                        "derived"),
    ("--teacher_recipe=nope", "--teacher_recipe=nope: allowed values are teacher-sgd, student-sgd, hinton-kd, "
                              "kd-logit-std, dkd, fitnet, at, function-matching"),
])
def test_check_messages_word_for_word(arg, message):
    with pytest.raises(UserError) as e:
        make_config([arg])
    assert str(e.value) == message


def test_help_lists_every_field_with_its_default():
    import dataclasses
    from utils.errors import HelpRequested
    with pytest.raises(HelpRequested) as e:
        parse_overrides(["--help"])
    for f in dataclasses.fields(Config):
        assert f" {f.name}=" in str(e.value), f.name
    assert " blocks=4 " in str(e.value) and " dataset=fashion-mnist " in str(e.value)


@pytest.mark.parametrize("script", ("train", "evaluate", "run_experiments", "plot_experiment_results"))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_exits_0(script, flag, capsys):
    import importlib

    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as e:
        module.cli([flag])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and err == ""
    assert module.__doc__.strip().splitlines()[0] in out  # the script's own command lines
    for needle in ("python train.py --role=teacher", "python run_experiments.py --preset=demo", "smoke", "demo",
                   "full", "docs/config.md"):
        assert needle in out, needle
