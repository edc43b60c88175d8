"""A transfer set (--unlabeled_samples): further training images whose labels the student never sees.
Carved once, seeded, disjoint from the labeled subset, val and test; their true labels never reach a
loss (corrupting them leaves the weights bit-identical); ce refuses it; summaries count both kinds."""
import json

import pytest
import torch

import run_experiments
import train
from config import make_config
from data import dataset
from data.dataset import UNLABELED, load_dataset
from distill import DISTILLERS
from tests.fixtures import small_run_args
from config import NO_TEACHER_METHODS
from utils.checkpoint import load_state_dict_file
from utils.errors import UserError

SMALL = small_run_args(max_train_samples=128, unlabeled_samples=192, max_test_samples=64, epochs=1, val_fraction=0.01,
                       augment="flip")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train.main(make_config(SMALL, role="teacher", unlabeled_samples=0, out_dir=str(out)))
    return str(out / "fashion-mnist_teacher_seed12")


def test_the_split_is_seeded_disjoint_and_unlabeled():
    cfg = make_config(SMALL, seed=3)
    ds, again = load_dataset(cfg), load_dataset(cfg)
    assert ds.unlabeled == 192 and ds.labeled == 128 and len(ds.train) == 320
    assert torch.equal(ds.train.images, again.train.images)  # carved once per seed: the same every time
    assert (ds.train.labels[ds.labeled:] == UNLABELED).all() and (ds.train.labels[:ds.labeled] >= 0).all()
    # the labeled images are those of the same run without a transfer set, and nothing repeats anywhere
    plain = load_dataset(make_config(SMALL, seed=3, unlabeled_samples=0))
    assert torch.equal(plain.train.images, ds.train.images[:ds.labeled])
    rows = lambda x: {bytes(r.numpy().tobytes()) for r in x}
    unl, lab, val = rows(ds.train.images[ds.labeled:]), rows(ds.train.images[:ds.labeled]), rows(ds.val.images)
    assert len(unl) == 192 and not unl & lab and not unl & val
    other = load_dataset(make_config(SMALL, seed=4))
    assert not torch.equal(other.train.images[other.labeled:], ds.train.images[ds.labeled:])


def test_too_many_unlabeled_images_is_one_line():
    with pytest.raises(UserError, match="only .* training images are left"):
        load_dataset(make_config(SMALL, unlabeled_samples=10**6))


@pytest.mark.parametrize("args, says", [
    (dict(method="ce"), "--method=ce has no teacher"),
    (dict(role="teacher"), "a teacher trains on labeled images only"),
    (dict(method="kd", mixup=0.2), "mixup blends labels"),
    (dict(method="kd", max_train_samples=0), "needs --max_train_samples"),
])
def test_refused_with_one_line(args, says):
    with pytest.raises(UserError, match=says) as e:
        make_config(SMALL, **args)
    assert "\n" not in str(e.value)


def test_the_no_teacher_methods_are_the_registrys():
    assert set(NO_TEACHER_METHODS) == {m for m, d in DISTILLERS.items() if not d.uses_teacher}


@pytest.mark.parametrize("method", ["kd", "dkd", "fm", "pl"])
def test_labels_of_unlabeled_images_never_reach_the_loss(method, teacher_dir, tmp_path, monkeypatch):
    """The transfer set is built from a train split whose labels outside the labeled subset are garbage:
    the student's weights, history and summary counts are exactly those of the honest run."""
    def run(where):
        cfg = make_config(SMALL, method=method, teacher_checkpoint=teacher_dir, out_dir=str(tmp_path / where))
        return train.main(cfg), tmp_path / where / f"fashion-mnist_res4_b64_fp32_{method}_u192_s0"

    honest, honest_dir = run("honest")
    real = dataset.transfer_set

    def corrupted(train_split, labeled_idx, n, seed):
        labels = torch.randint(0, 10, train_split.labels.shape, generator=torch.Generator().manual_seed(1))
        keep = torch.zeros(len(labels), dtype=torch.bool)
        keep[labeled_idx] = True
        labels = torch.where(keep, train_split.labels, labels)
        assert not torch.equal(labels, train_split.labels)
        return real(dataset.Split(train_split.images, labels), labeled_idx, n, seed)

    monkeypatch.setattr(dataset, "transfer_set", corrupted)
    lied, lied_dir = run("corrupted")
    a, b = (load_state_dict_file(d / "model.safetensors") for d in (honest_dir, lied_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)
    h = [json.loads((d / "history.json").read_text()) for d in (honest_dir, lied_dir)]
    assert [r["train_loss"] for r in h[0]] == [r["train_loss"] for r in h[1]]
    assert honest["train_images"] == 128 and honest["unlabeled_images"] == 192
    assert lied["best_test_acc"] == honest["best_test_acc"]
    assert "192 unlabeled" in (honest_dir / "training_summary.txt").read_text()


def test_a_cross_entropy_without_labels_is_zero_not_nan():
    from distill.base import labeled_cross_entropy

    logits = torch.randn(4, 10, requires_grad=True)
    assert labeled_cross_entropy(logits, torch.full((4,), UNLABELED)).item() == 0.0
    y = torch.tensor([3, UNLABELED, 1, UNLABELED])
    want = torch.nn.functional.cross_entropy(logits[[0, 2]], y[[0, 2]])
    assert labeled_cross_entropy(logits, y).item() == pytest.approx(want.item(), rel=1e-6)


def test_the_sweep_keeps_the_control_on_labeled_images():
    base = make_config(SMALL, seeds=2, first_seed=100, sweep_blocks=(4,), sweep_methods=("kd", "pl"),
                       sweep_precisions=("fp32",), teacher_checkpoint="x")
    runs = run_experiments.grid(base)
    assert all(c.role == "student" for c in runs)  # a trained teacher is named: the sweep trains none
    assert sorted({c.seed for c in runs}) == [100, 101]
    assert {c.method: c.unlabeled_samples for c in runs} == {"ce": 0, "kd": 192, "pl": 192}
    # transfer_epochs: the transfer runs' own schedule, the warm-up keeping its share; the control keeps its own
    runs = run_experiments.grid(make_config(SMALL, epochs=40, warmup_epochs=1.0, transfer_epochs=4,
                                            sweep_methods=("kd",), teacher_checkpoint="x"))
    assert {(c.method, c.epochs, c.warmup_epochs) for c in runs} == {("ce", 40, 1.0), ("kd", 4, 0.1)}
