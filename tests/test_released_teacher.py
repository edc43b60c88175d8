"""The teacher that ships in teachers/: small, with its provenance, trained on images the students never
select on, and as accurate on the whole test split as its summary says."""
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from config import PRESETS, make_config
from models.teacher_arch import build_teacher
from runtime.teacher import load_frozen_teacher
from tests.fixtures import load_script
from utils.atomic import read_json_object
from utils.checkpoint import save_weights
from utils.errors import UserError
from utils.run_files import DIGEST_KEY, DIGESTED_FILES, file_digests, score

ROOT = Path(__file__).resolve().parents[1]
release = load_script("teachers/release.py")

RELEASED = sorted(p.parent for p in (ROOT / "teachers").glob("*/summary.json"))


def students_of(run_dir: Path) -> str:
    """The preset whose students learn from this released teacher (the demo's for the classifiers)."""
    return "seg" if read_json_object(str(run_dir / "config.json")).get("task") == "segment" else "demo"


def test_the_presets_use_a_released_teacher():
    for name in ("demo", "reduced", "seg"):
        path = ROOT / PRESETS[name]["teacher_checkpoint"]
        assert path in RELEASED, name


@pytest.mark.parametrize("run_dir", RELEASED, ids=lambda p: p.name)
def test_released_teacher_is_small_and_says_where_it_came_from(run_dir):
    files = [p for p in run_dir.iterdir() if p.name in release.RELEASED_FILES]
    assert sum(p.stat().st_size for p in files) <= release.MAX_BYTES
    s = read_json_object(str(run_dir / "summary.json"))
    assert s["status"] == "complete" and s["role"] == "teacher"
    assert s["provenance"]["git_commit"] and s["hardware"] and s["train_seconds"] > 0
    assert s["release"]["remade_by"].startswith("make seg-teacher" if s.get("task") == "segment" else "make teacher")
    cfg = read_json_object(str(run_dir / "config.json"))
    # the whole train split less the fixed validation hold-out: the students' val images are never its training images
    assert cfg["max_train_samples"] == 0 and cfg["max_test_samples"] == 0
    for name in ("demo", "reduced", "seg"):
        students = make_config([f"--preset={name}"])
        if Path(students.teacher_checkpoint).name == run_dir.name:
            assert (students.val_fraction, students.dataset) == (cfg["val_fraction"], cfg["dataset"])


@pytest.mark.parametrize("run_dir", RELEASED, ids=lambda p: p.name)
def test_released_teacher_records_the_sha256_of_its_weights_and_loads(run_dir):
    s = read_json_object(str(run_dir / "summary.json"))
    assert s["release"][DIGEST_KEY] == file_digests(run_dir, DIGESTED_FILES)
    assert "best_model.safetensors" in s["release"][DIGEST_KEY]  # (model.safetensors where it fits the size)
    cfg = replace(make_config([f"--preset={students_of(run_dir)}"]), teacher_checkpoint=str(run_dir))
    load_frozen_teacher(cfg, s["in_channels"], s["num_classes"], "cpu", s["image_size"])


def test_an_untrained_resnet20_in_a_copy_of_the_released_teacher_is_refused(tmp_path):
    copy = tmp_path / "teacher"
    shutil.copytree(ROOT / PRESETS["demo"]["teacher_checkpoint"], copy, ignore=shutil.ignore_patterns("logits_cache"))
    cfg = replace(make_config(["--preset=demo"]), teacher_checkpoint=str(copy))
    torch.manual_seed(0)
    save_weights(build_teacher(cfg, 1, 10), copy / "best_model.safetensors")  # loads, but has learned nothing
    with pytest.raises(UserError, match="sha256 .* differs from the .* its run's summary.json records"):
        load_frozen_teacher(cfg, 1, 10, "cpu", 28)


@pytest.mark.slow  # the whole test split through resnet20: demo-size
@pytest.mark.parametrize("run_dir", RELEASED, ids=lambda p: p.name)
def test_released_teacher_measures_what_its_summary_says(run_dir):
    s = read_json_object(str(run_dir / "summary.json"))
    acc, n = release.measured_accuracy(run_dir)
    assert n == s["test_images"] == (2_000 if s.get("task") == "segment" else 10_000)
    assert abs(acc - score(s)) <= release.TOLERANCE
