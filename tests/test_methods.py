"""Every distillation method at tiny size: with every teacher family, adapters that train and resume,
feature hooks that never stay behind, and summaries that record each method's hyper-parameters."""
import json

import pytest
import torch

import train
from config import METHODS, make_config
from distill import build_distiller
from distill.base import TeacherOut
from models.cnn_model import ResidualCNN
from models.features import capture
from models.teacher_arch import build_teacher
from tests.fixtures import interrupt_after_first_epoch, small_run_args
from utils.names import METHODS as TABLE

SMALL = small_run_args(max_train_samples=192, max_test_samples=64, epochs=2, val_fraction=0.01)


def _teacher_out(distiller, teacher, x):
    with torch.no_grad(), capture(teacher, distiller.teacher_layers) as maps:
        logits = teacher(x)
    return TeacherOut(logits, dict(maps) if distiller.teacher_layers else None)


@pytest.mark.parametrize("arch", ["seed12", "resnet20", "wrn10_1", "resnet18"])
@pytest.mark.parametrize("method", [m for m in METHODS if TABLE[m].teacher and "classify" in TABLE[m].tasks])
def test_every_method_with_every_teacher_family(method, arch):
    torch.manual_seed(0)
    cfg = make_config(method=method, teacher_arch=arch, teacher_width=4, blocks=4)
    teacher = build_teacher(cfg, 1, 10).eval()
    student = ResidualCNN(4, 1, 10)
    d = build_distiller(cfg, student, teacher, (1, 28, 28))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    logits, terms = d.forward_train(x, y, _teacher_out(d, teacher, x), epoch=0)
    loss = sum(terms.values())
    loss.backward()
    assert logits.shape == (8, 10) and torch.isfinite(loss) and len(terms) >= 1
    assert all(p.grad is not None for p in d.learnable_parameters() if p.requires_grad and p.dim() > 1)
    assert not any(m._forward_hooks for m in list(student.modules()) + list(teacher.modules()))
    assert d.needs_features == TABLE[method].features  # the table's flag is what the distiller reads
    if TABLE[method].features:
        assert d.hparams()


def test_hooks_are_removed_after_an_exception():
    model = ResidualCNN(2, 1, 10)
    with pytest.raises(RuntimeError):
        with capture(model, ["features.0", "features.1"]):
            model(torch.randn(2, 3, 28, 28))  # wrong channel count: the forward raises
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="no module named"):
        with capture(model, ["nope"]):
            pass


def test_fitnet_adapter_is_trained_saved_and_resumed(tmp_path, monkeypatch):
    out = str(tmp_path)
    train.main(make_config(SMALL, role="teacher", teacher_arch="resnet20", epochs=1, out_dir=out))
    args = SMALL + ["--method=fitnet", "--teacher_arch=resnet20", "--blocks=3"]
    straight = train.main(make_config(args, out_dir=out, run_name="straight"))
    ck = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    adapter = ck["trainable"]["adapter"]
    assert set(ck["trainable"]) == {"student", "adapter"} and "0.weight" in adapter
    torch.manual_seed(0)
    fresh = build_distiller(make_config(args), ResidualCNN(3, 1, 10), build_teacher(make_config(args), 1, 10),
                            (1, 28, 28)).adapter.state_dict()
    assert not torch.equal(adapter["0.weight"], fresh["0.weight"])  # it trained
    assert "hint" in straight["hparams"] and straight["hparams"]["fitnet_weight"] == 100.0
    assert "fitnet_weight=100.0" in (tmp_path / "straight" / "training_summary.txt").read_text()

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        interrupt_after_first_epoch(m)
        train.main(make_config(args, out_dir=out, run_name="resumed"))
    train.main(make_config(args + ["--resume=True"], out_dir=out, run_name="resumed"))
    keys = ("train_loss", "train_hint", "val_acc", "test_acc")
    a = json.loads((tmp_path / "straight" / "history.json").read_text())
    b = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [[h.get(k) for k in keys] for h in a] == [[h.get(k) for k in keys] for h in b]


def test_function_matching_teacher_sees_the_mixed_batch(tmp_path):
    out = str(tmp_path)
    train.main(make_config(SMALL, role="teacher", teacher_arch="resnet20", epochs=1, out_dir=out))
    s = train.main(make_config(SMALL + ["--recipe=function-matching", "--teacher_arch=resnet20", "--epochs=1"],
                               out_dir=out))
    assert s["method"] == "fm" and s["teacher_logits"].startswith("online")
    assert s["hparams"] == {"fm_temperature": 1.0, "fm_mixup": 1.0}
    hist = json.loads((tmp_path / s["run_name"] / "history.json").read_text())
    assert "train_loss" in hist[0] and s["status"] == "complete"
