"""Students trained together (train.train_runs, what the sweep does) write exactly what each writes alone:
same histories and weights on a CPU, a failing student ends alone, and the sweep groups by seed."""
import json

import torch

import run_experiments
import train
from config import make_config
from runtime.epochs import RunFailed
from sweep.plan import student_groups
from tests.fixtures import small_run_args
from utils.checkpoint import load_state_dict_file

SMALL = small_run_args(max_train_samples=256, max_test_samples=64, epochs=2, val_fraction=0.01, augment="flip")
KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "val_acc", "lr")


def _history(run_dir):
    return [[row.get(k) for k in KEYS] + [row.get(k) for k in sorted(row) if k.startswith("train_")]
            for row in json.loads((run_dir / "history.json").read_text())]


def test_grouped_students_match_their_solo_runs(tmp_path):
    teacher = tmp_path / "t"
    train.main(make_config(SMALL, role="teacher", epochs=1, out_dir=str(teacher)))
    tdir = str(teacher / "fashion-mnist_teacher_seed12")
    runs = [dict(method="ce", blocks=2), dict(method="kd", blocks=3), dict(method="dkd", blocks=2),
            dict(method="at", blocks=2), dict(method="kd", blocks=2, precision="bf16")]
    for where in ("alone", "together"):
        cfgs = [make_config(SMALL, teacher_checkpoint=tdir, out_dir=str(tmp_path / where), **r) for r in runs]
        if where == "alone":
            for c in cfgs:
                train.main(c)
        else:
            summaries = train.train_runs(cfgs)
            assert [s["status"] for s in summaries] == ["complete"] * len(runs)
    for d in sorted((tmp_path / "alone").iterdir()):
        other = tmp_path / "together" / d.name
        assert _history(d) == _history(other), d.name
        a, b = load_state_dict_file(d / "model.safetensors"), load_state_dict_file(other / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), d.name


def test_a_failing_student_ends_alone(tmp_path, monkeypatch):
    cfgs = [make_config(SMALL, method="ce", blocks=b, out_dir=str(tmp_path)) for b in (2, 3)]
    real_step = train.train_epochs_together.__globals__["train_step"]

    def step(t, batch, teacher_out, epoch):  # the 3-block student's loss turns into NaN
        loss, logits, terms = real_step(t, batch, teacher_out, epoch)
        if t.distiller.student.blocks == 3:
            loss = loss * float("nan")
        return loss, logits, terms

    monkeypatch.setitem(train.train_epochs_together.__globals__, "train_step", step)
    out = train.train_runs(cfgs)
    assert out[0]["status"] == "complete"
    assert isinstance(out[1], RunFailed) and "non-finite" in str(out[1])


def test_sweep_groups_students_by_seed():
    base = make_config(["--preset=smoke", "--seeds=2"], sweep_methods=("kd", "dkd", "at"))
    students = run_experiments.grid(base)[1:]
    groups = student_groups(students)
    assert len(groups) == 2 and sorted(len(g) for g in groups) == [len(students) // 2] * 2
    assert all(len({c.seed for c in g}) == 1 for g in groups)
