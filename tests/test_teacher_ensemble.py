"""Several teachers as one (--teacher_checkpoint=a,b): the students learn from the mean of the members' logits,
each member checked as a single teacher is, logits cached once per member and image; feature methods and a
member named twice are one line. Tiny idx data, two smoke teachers of 1 epoch: seconds."""
import json
import shutil
from functools import partial

import pytest
import torch

import train
from config import make_config
from data.dataset import load_dataset
from runtime.teacher import TeacherEnsemble, load_frozen_teacher
from tests.fixtures import copy_run, load_script, small_run_args
from utils.errors import UserError

TEACHER = "fashion-mnist_teacher_seed12"
_args = partial(small_run_args, batch_size=32, val_fraction=0.2)  # on fashion_idx, as the teachers trained


@pytest.fixture(scope="module")
def setup(fashion_idx, smoke_teacher, tmp_path_factory):
    """The data and copies of the shared smoke teachers of seeds 0 and 1 (t0/, t1/): the students here cache
    the ensemble's logits beside the first member."""
    out = tmp_path_factory.mktemp("teachers")
    members = [copy_run(smoke_teacher("--val_fraction=0.2", *([f"--seed={seed}"] if seed else [])), out / f"t{seed}")
               for seed in (0, 1)]
    return fashion_idx, members


def test_the_ensemble_is_the_mean_of_its_members_logits(setup):
    data, (a, b) = setup
    cfg = make_config(_args(data, "/tmp/unused", f"--teacher_checkpoint={a},{b}"))
    ds = load_dataset(cfg)
    ensemble, info = load_frozen_teacher(cfg, ds.in_channels, ds.num_classes, torch.device("cpu"), ds.image_size,
                                         data=ds)
    assert isinstance(ensemble, TeacherEnsemble) and len(ensemble.members) == 2
    assert info["teacher_run"] == f"{a},{b}" and info["teacher_acc"] is None  # measured by train.py on test
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        members = [load_frozen_teacher(make_config(_args(data, "/tmp/unused", f"--teacher_checkpoint={m}")),
                                       1, 10, torch.device("cpu"), 28)[0](x) for m in (a, b)]
        assert torch.allclose(ensemble(x), (members[0] + members[1]) / 2, atol=1e-5)
    assert not any(p.requires_grad for p in ensemble.parameters())


def test_a_student_learns_from_an_ensemble_and_records_it(setup, tmp_path):
    data, (a, b) = setup
    summary = train.main(make_config(_args(data, tmp_path, "--blocks=1", "--method=kd", "--augment=flip",
                                           f"--teacher_checkpoint={a},{b}")))
    assert summary["teacher_run"] == f"{a},{b}" and summary["teacher_arch"] == "seed12+seed12"
    assert 0 <= summary["teacher_acc"] <= 100  # the ensemble's own accuracy on the test split
    caches = list((a / "logits_cache").glob("*.safetensors"))
    assert caches  # one cache of the ensemble's logits per view, beside the first member
    again = train.main(make_config(_args(data, tmp_path, "--blocks=1", "--method=kd", "--augment=flip", "--run_name=again",
                                         f"--teacher_checkpoint={a},{b}")))
    assert sorted((a / "logits_cache").glob("*.safetensors")) == sorted(caches)  # reused, not computed again
    assert again["best_test_acc"] == summary["best_test_acc"]


@pytest.mark.parametrize("extra, match", [("twice", "a member is named twice"),
                                          ("missing", "no teacher run or weights file")])
def test_what_an_ensemble_cannot_be_is_one_line(setup, tmp_path, extra, match):
    data, (a, b) = setup
    members = {"twice": f"{a},{a}", "missing": f"{a},{tmp_path / 'nothing'}"}.get(extra, f"{a},{b}")
    cfg = make_config(_args(data, tmp_path, "--blocks=1", f"--teacher_checkpoint={members}",
                            *([extra] if extra.startswith("--") else [])))
    with pytest.raises(UserError, match=match):
        train.main(cfg)


def test_a_changed_member_is_caught_by_its_own_digest(setup, tmp_path):
    data, (a, b) = setup
    spoilt = tmp_path / TEACHER
    shutil.copytree(b, spoilt, ignore=shutil.ignore_patterns("logits_cache"))
    weights = spoilt / "best_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    assert "sha256" in json.loads((spoilt / "summary.json").read_text())
    with pytest.raises(UserError, match="differs from the"):
        train.main(make_config(_args(data, tmp_path, "--blocks=1", f"--teacher_checkpoint={a},{spoilt}")))


@pytest.mark.parametrize("spec", ["{a},", "{a},,{b}", "{a},{a}/", "{a},{a}/best_model.safetensors"])
def test_an_empty_or_repeated_member_never_stands_for_another_teacher(setup, tmp_path, spec):
    data, (a, b) = setup
    cfg = make_config(_args(data, tmp_path, "--blocks=1", f"--teacher_checkpoint={spec.format(a=a, b=b)}"))
    with pytest.raises(UserError, match="an empty member|named twice"):
        train.main(cfg)


def test_a_feature_method_with_an_ensemble_is_refused_before_anything_loads():
    with pytest.raises(UserError, match="matches one teacher's feature maps"):
        make_config(["--method=fitnet", "--teacher_checkpoint=a,b"])


def test_a_teacher_of_another_seed_is_a_member_of_its_own_name():
    """make teacher trains two members; seed 0 keeps the released name, others get _s<seed>."""
    from config import default_run_name, make_config
    assert default_run_name(make_config(role="teacher", teacher_arch="resnet32")) == "fashion-mnist_teacher_resnet32"
    assert (default_run_name(make_config(role="teacher", teacher_arch="resnet32", seed=1))
            == "fashion-mnist_teacher_resnet32_s1")
    assert default_run_name(make_config(seed=1)).endswith("_s1")  # a student's name is unchanged


def test_release_measures_the_ensemble_the_students_learn_from(setup, tmp_path, capsys):
    """teachers/release.py --ensemble (make teacher's last step): each member checked, then the mean of their
    logits on the test split, the same number a student of that ensemble records as its teacher's accuracy."""
    release = load_script("teachers/release.py")
    data, (a, b) = setup
    student = train.main(make_config(_args(data, tmp_path, "--blocks=1", "--method=kd", "--augment=flip",
                                           f"--teacher_checkpoint={a},{b}")))
    assert release.ensemble(f"{a},{b}") == pytest.approx(student["teacher_acc"], abs=1e-6)
    assert "ensemble of 2" in capsys.readouterr().out
    for bad in (f"{a}", f"{a},{a}"):
        with pytest.raises(UserError, match="two or more different teacher runs"):
            release.ensemble(bad)
