"""The method table (utils/names.py) is the one place a method is declared beside its own file: no other
product module names a method, everything derived from the table agrees with it, and a new method added by
docs/methods.md's three steps alone (a file in distill/, a table entry, a test) trains."""
import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import config
import config_rules
import tune
from config import Config
from distill import DISTILLERS
from tests.fixtures import ROOT, literals_outside, make_fashion_mnist_idx, product_files
from utils.errors import UserError
from utils.names import CONTROL, DEFAULT_METHOD, METHOD_DOC, METHOD_LOOKS, METHOD_TABLE, METHODS, method_look

TABLE_FILE = "utils/names.py"
MAY_NAME_ANY_METHOD = {TABLE_FILE, "presets.py"}  # the table, and the presets' recipes and sweeps (values)


def test_a_method_is_named_only_in_its_own_file_the_table_and_the_presets():
    found = literals_outside(set(METHODS), lambda rel, name: rel in MAY_NAME_ANY_METHOD or rel == f"distill/{name}.py")
    assert len(product_files()) > 50 and not found, "\n".join(found)


def test_everything_derived_agrees_with_the_table():
    assert config.METHODS == tuple(m.name for m in METHOD_TABLE) == tuple(DISTILLERS) == tuple(METHOD_LOOKS)
    for name, cls in DISTILLERS.items():
        m = METHODS[name]
        assert cls.__name__ == m.distiller and cls.name == name and cls.uses_teacher == m.teacher
        assert cls.__module__ == f"distill.{name}" and method_look(name).label == m.label
    assert not METHODS[CONTROL].teacher and DEFAULT_METHOD in METHODS
    assert Config().method == DEFAULT_METHOD and Config().sweep_methods == (DEFAULT_METHOD,)
    assert set(config_rules.NO_TEACHER_METHODS) == {n for n, m in METHODS.items() if not m.teacher}
    assert set(config_rules.FEATURE_METHODS) == {n for n, m in METHODS.items() if m.features}
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert fields["method"].metadata["doc"] == METHOD_DOC
    for name, m in METHODS.items():
        for field, rng in m.hparams.items():  # a typo in the table would record nothing and tune nothing
            assert field in fields and name in fields[field].metadata["methods"], (name, field)
            assert fields[field].metadata["recipe"], f"{field}: a method's hyper-parameter is declared with _learn"
            assert rng is None or tune.SPACE[field] == rng
    owned = {f for m in METHOD_TABLE for f in m.hparams}
    assert {n for n, f in fields.items() if f.metadata["methods"]} == owned
    assert set(tune.SPACE) - owned == {"lr", "weight_decay"}  # the generic ones


def test_a_method_refuses_what_its_entry_says():
    refusals = [(n, flag, why) for n, m in METHODS.items() for flag, why in m.refuses.items()]
    assert refusals
    value = {"student_arch": "timm:resnet10t"}  # a value the field takes; 0.2 for the numbers
    for name, flag, why in refusals:
        with pytest.raises(UserError) as e:
            config.make_config([f"--method={name}", f"--{flag}={value.get(flag, 0.2)}"])
        assert str(e.value) == f"--method={name} with --{flag}: {why}"


TOY_FILE = '''"""A toy method: cross-entropy on temperature-scaled logits, no teacher."""
from distill.base import Distiller
from distill.ce import CE_TERM


class Toy(Distiller):
    name = "toy"

    def __init__(self, student, cfg, teacher=None, input_shape=None):
        super().__init__(student, cfg, teacher, input_shape)
        self.temperature = cfg.temperature

    def forward_train(self, x, y, teacher_out, epoch):
        logits = self.student(x)
        return logits, {CE_TERM: self.ce(logits.float() / self.temperature, y)}
'''
TOY_ENTRY = ('    Method("toy", "toy (a test\'s)", ":", "..", "Toy", "a test\'s toy", teacher=False, '
             'hparams={"temperature": TEMPERATURE}),\n')
# what the toy's own test checks, in the copy: config, rules, tune and a tiny training run
TOY_TEST = textwrap.dedent('''
    import json, sys
    import config, config_rules, train, tune
    from distill import DISTILLERS, needs_teacher
    from utils.errors import UserError

    data, out = sys.argv[1:]
    cfg = config.make_config(["--method=toy", "--val_fraction=0.1"])
    assert config.METHODS[-1] == "toy"
    assert config.Config.__dataclass_fields__["method"].metadata["doc"].endswith("| toy (a test's toy)")
    assert not needs_teacher(cfg) and "toy" in config_rules.NO_TEACHER_METHODS and not DISTILLERS["toy"].uses_teacher
    try:
        config.make_config(["--method=toy", "--unlabeled_samples=8", "--max_train_samples=16"])
        raise SystemExit("a transfer set was accepted for a method without a teacher")
    except UserError as e:
        assert "--method=toy has no teacher" in str(e), e
    tune.check_params(cfg, ["temperature"])
    assert "temperature" in tune.SPACE
    summary = train.main(config.make_config([
        "--preset=smoke", "--method=toy", "--temperature=2", f"--data_dir={data}", f"--out_dir={out}",
        "--max_train_samples=64", "--max_test_samples=20", "--epochs=1", "--blocks=1", "--width=4", "--batch_size=32",
        "--device=cpu", "--tensorboard=False"]))
    print(json.dumps({k: summary[k] for k in ("method", "status", "hparams", "run_name")}))
''')


def add_toy_method(repo: Path) -> None:
    """docs/methods.md's steps 1 and 2 in a copy of the project: the file, the table entry."""
    (repo / "distill" / "toy.py").write_text(TOY_FILE)
    table = repo / TABLE_FILE
    lines = table.read_text().splitlines(keepends=True)
    node = next(n for n in ast.parse("".join(lines)).body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", "") == "METHOD_TABLE" for t in n.targets))
    lines.insert(node.value.end_lineno - 1, TOY_ENTRY)  # before the tuple's closing line
    table.write_text("".join(lines))


def test_a_toy_method_added_by_the_documented_steps_trains(tmp_path):
    repo = tmp_path / "repo"
    for rel in product_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    add_toy_method(repo)
    (repo / "toy_test.py").write_text(TOY_TEST)  # step 3, the toy's test
    data = make_fashion_mnist_idx(tmp_path / "fm", n_train=80, n_test=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    r = subprocess.run([sys.executable, "toy_test.py", str(data), str(tmp_path / "out")], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["method"] == "toy" and summary["status"] == "complete"
    assert summary["hparams"] == {"temperature": 2.0} and "_toy_" in summary["run_name"]
