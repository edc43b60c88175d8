import subprocess
import sys
from pathlib import Path

import pytest

from config import Config, make_config, parse_overrides
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_literals_strings_and_presets():
    cfg = make_config(["--preset=smoke", "--blocks=6", "--fc_layers=[32, 16]", "--lr=1e-2", "--run_name=123"])
    assert cfg.blocks == 6 and cfg.fc_layers == (32, 16) and cfg.lr == 0.01 and cfg.run_name == "123"
    assert cfg.max_train_samples == 256  # from the preset
    assert make_config(["--sweep_precisions=fp8"]).sweep_precisions == ("fp8",)
    assert make_config(["--sweep_precisions=[fp32,fp8]"]).sweep_precisions == ("fp32", "fp8")
    assert make_config(["--sweep_blocks=[4, 6]"]).sweep_blocks == (4, 6)


def test_config_is_frozen():
    import dataclasses
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.blocks = 8
    assert dataclasses.replace(cfg, blocks=8).blocks == 8 and cfg.blocks == 4


@pytest.mark.parametrize("arg,needle", [("--precision=fp7", "precision"), ("--blocks=many", "blocks"),
                                        ("--nope=1", "nope"), ("--preset=huge", "preset"),
                                        ("--blocks=0", "blocks"), ("--lr=fast", "lr"), ("blocks=4", "blocks=4"),
                                        ("--sweep_methods=[\"kd\",\"xx\"]", "sweep_methods")])
def test_bad_values_raise_user_error(arg, needle):
    with pytest.raises(UserError, match=needle):
        parse_overrides([arg]) and make_config([arg])


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "run_experiments.py", "plot_experiment_results.py"])
def test_cli_bad_value_exits_2_with_one_line(script):
    r = subprocess.run([sys.executable, script, "--precision=fp7"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "precision" in lines[0] and "fp32" in lines[0]
    assert "Traceback" not in r.stderr


def test_docs_config_md_is_generated_from_the_schema():
    import dataclasses
    import importlib.util
    spec = importlib.util.spec_from_file_location("config_doc", ROOT / "docs" / "config_doc.py")
    doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(doc)
    text = (ROOT / "docs" / "config.md").read_text()
    assert text == doc.render(), "docs/config.md is stale: run python docs/config_doc.py"
    # every field has its row, with the comment config.py gives it
    for f in dataclasses.fields(Config):
        assert f"| `{f.name}` |" in text, f.name
    assert "| `select_from` | `0.0` | train | share of the epochs before the first evaluation" in text
