"""The teacher that ships in teachers/: small, with its provenance, trained on images the students never
select on, and as accurate on the whole test split as its summary says."""
import importlib.util
from pathlib import Path

import pytest

from config import PRESETS, make_config
from utils.atomic import read_json_object

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("release", ROOT / "teachers" / "release.py")
release = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release)

RELEASED = sorted(p.parent for p in (ROOT / "teachers").glob("*/summary.json"))


def test_the_presets_use_a_released_teacher():
    for name in ("demo", "reduced"):
        path = ROOT / PRESETS[name]["teacher_checkpoint"]
        assert path in RELEASED, name


@pytest.mark.parametrize("run_dir", RELEASED, ids=lambda p: p.name)
def test_released_teacher_is_small_and_says_where_it_came_from(run_dir):
    files = [p for p in run_dir.iterdir() if p.name in release.RELEASED_FILES]
    assert sum(p.stat().st_size for p in files) <= release.MAX_BYTES
    s = read_json_object(str(run_dir / "summary.json"))
    assert s["status"] == "complete" and s["role"] == "teacher"
    assert s["provenance"]["git_commit"] and s["hardware"] and s["train_seconds"] > 0
    assert s["release"]["remade_by"].startswith("make teacher")
    cfg = read_json_object(str(run_dir / "config.json"))
    # the whole train split less the fixed validation hold-out: the students' val images are never its training images
    assert cfg["max_train_samples"] == 0 and cfg["max_test_samples"] == 0
    for name in ("demo", "reduced"):
        students = make_config([f"--preset={name}"])
        if Path(students.teacher_checkpoint).name == run_dir.name:
            assert (students.val_fraction, students.dataset) == (cfg["val_fraction"], cfg["dataset"])


@pytest.mark.slow  # the whole test split through resnet20: demo-size
@pytest.mark.parametrize("run_dir", RELEASED, ids=lambda p: p.name)
def test_released_teacher_measures_what_its_summary_says(run_dir):
    s = read_json_object(str(run_dir / "summary.json"))
    acc, n = release.measured_accuracy(run_dir)
    assert n == s["test_images"] == 10_000
    assert abs(acc - s["best_test_acc"]) <= release.TOLERANCE
