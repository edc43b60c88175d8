"""utils/run_files.py is the one owner of a run directory's names: docs/runs.md's tables and run-name pattern are
generated from it, cli.default_run_name fills its pattern, and no other product module spells a run file."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from config import default_run_name
from utils import run_files as rf

from tests.fixtures import literals_outside, load_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the names whose literal must live in utils/run_files.py alone
OWNED = (rf.CONFIG, rf.BEST_WEIGHTS, rf.FINAL_WEIGHTS, rf.QUANT_FILE, rf.INT8_FILE, rf.INT8_STATE_FILE, rf.CHECKPOINT)
# and every other file (not folder: "plots", "deploy" are words too) a run directory or a sweep's out_dir holds
OWNED += tuple(name for name in {**rf.RUN_FILES, **rf.SWEEP_FILES} if "." in name and name not in OWNED)


def runs_doc():
    return load_script("docs/runs_doc.py")


def test_docs_runs_md_is_generated_from_run_files():
    doc = runs_doc()
    text = (ROOT / "docs" / "runs.md").read_text()
    assert text == doc.render(text), "docs/runs.md is stale: run python docs/runs_doc.py"
    for name in {**rf.RUN_FILES, **rf.SWEEP_FILES}:  # every file has its row
        assert f"| `{name}/` |" in text or f"| `{name}` |" in text, name
    assert "<dataset>_res<blocks>_b<batch_size>_<precision>_<method>[_u<N>][_q<mode>][_g<generation>]_s<seed>" in text
    assert "<dataset>_teacher_<arch>[_s<seed>]" in text


def pattern_regex(pattern: str) -> re.Pattern:
    """A documented name pattern as a regex: <x> one value (no "_"), [part] an optional part."""
    out = []
    for token in re.split(r"(<[^>]+>|\[|\])", pattern):
        value = "[A-Za-z0-9.+-]+" if token.startswith("<") else re.escape(token)
        out.append({"[": "(?:", "]": ")?"}.get(token, value))
    return re.compile("".join(out))


def config(**kw):
    base = dict(run_name="", role="student", dataset="fashion-mnist", student_arch="", blocks=4, batch_size=224,
                precision="fp32", method="kd", unlabeled_samples=0, qat="none", seed=0, teacher_arch="resnet20")
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("kw, name", [
    ({}, "fashion-mnist_res4_b224_fp32_kd_s0"),
    ({"unlabeled_samples": 5000, "seed": 2}, "fashion-mnist_res4_b224_fp32_kd_u5000_s2"),
    ({"qat": "int4", "method": "ce", "blocks": 8}, "fashion-mnist_res8_b224_fp32_ce_qint4_s0"),
    ({"unlabeled_samples": 96, "qat": "int8", "precision": "bf16"}, "fashion-mnist_res4_b224_bf16_kd_u96_qint8_s0"),
    ({"student_arch": "timm:resnet10t"}, "fashion-mnist_timm-resnet10t_b224_fp32_kd_s0"),
    ({"role": "teacher"}, "fashion-mnist_teacher_resnet20"),
    ({"role": "teacher", "seed": 1, "teacher_arch": "timm:resnet18"}, "fashion-mnist_teacher_timm-resnet18_s1"),
])
def test_default_run_names_fit_the_documented_pattern(kw, name):
    got = default_run_name(config(**kw))
    assert got == name
    student, teacher = runs_doc().run_name_patterns()
    if kw.get("student_arch"):  # the docs: timm-<name> stands for res<blocks>
        student = student.replace("res<blocks>", "timm-<name>")
    assert pattern_regex(teacher if kw.get("role") == "teacher" else student).fullmatch(got), got


def test_the_released_teachers_still_read():
    """Run directories written before the names became constants read through them unchanged."""
    for run in sorted((ROOT / "teachers").glob("*_teacher_*")):
        assert rf.is_complete(run), run
        assert Path(rf.run_weights_file(run)).name == rf.BEST_WEIGHTS
        assert (run / rf.CONFIG).is_file() and (run / rf.HISTORY).is_file()
        assert (run / rf.TRAINING_SUMMARY).is_file()
        saved = json.loads((run / rf.CONFIG).read_text())
        assert run.name == default_run_name(config(role="teacher", teacher_arch=saved["teacher_arch"],
                                                   seed=saved["seed"], dataset=saved["dataset"],
                                                   task=saved.get("task", "classify")))


def test_run_file_names_are_spelled_in_run_files_alone():
    found = literals_outside(OWNED, lambda rel, name: rel == "utils/run_files.py")
    assert not found, "spelled outside utils/run_files.py:\n" + "\n".join(found)