"""BYOT (distill/byot.py, models/multi_exit.py): the loss against a hand computation, the exits' forward paths
against each other, a byot run trained and measured by evaluate.py --exit (one exit; early exit at a
confidence), and the one-line refusals."""
import json

import pytest
import torch
import torch.nn.functional as F

import evaluate
import train
from config import make_config
from distill.byot import byot_loss
from models.cnn_model import ResidualCNN, count_params
from models.multi_exit import MultiExitCNN, exit_blocks
from models.teacher_arch import build_model
from tests.fixtures import one_line_exit, small_run_args
from utils.errors import UserError


def test_byot_loss_is_the_papers_sum_over_the_shallow_exits():
    torch.manual_seed(0)
    q1, q2, deep = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    f1, f2, fd = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 3])
    terms = byot_loss([q1, q2, deep], [f1, f2, fd], y, weight=0.3, temperature=3.0, feature_weight=0.03,
                      ce=F.cross_entropy)

    def kl(q):  # T^2 KL(softmax(deep / T) || softmax(q / T)), batch mean
        p = F.softmax(deep / 3, 1)
        return 9 * (p * (p.log() - F.log_softmax(q / 3, 1))).sum(1).mean()
    ce = F.cross_entropy(deep, y) + 0.7 * (F.cross_entropy(q1, y) + F.cross_entropy(q2, y))
    assert torch.isclose(terms["ce"], ce) and torch.isclose(terms["byot_kl"], 0.3 * (kl(q1) + kl(q2)))
    feat = ((f1 - fd) ** 2).sum(1).mean() + ((f2 - fd) ** 2).sum(1).mean()
    assert torch.isclose(terms["byot_feat"], 0.03 * feat)


def test_the_exits_of_a_multi_exit_student_agree_with_each_other():
    assert exit_blocks(4) == [2, 4] and exit_blocks(8) == [2, 4, 6, 8] and exit_blocks(5) == [2, 4, 5]
    torch.manual_seed(0)
    model = MultiExitCNN(6, 1, 10).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        logits, feats = model.exits(x)
        assert len(logits) == len(feats) == model.num_exits == 3 and torch.allclose(model(x), logits[-1])
        for k in (1, 2, 3):
            assert torch.allclose(model.exit_logits(x, k), logits[k - 1], atol=1e-6)
        assert model.early_exit(x[:1], 0.0)[1] == 1 and model.early_exit(x[:1], 1.01)[1] == 3
    plain = ResidualCNN(6, 1, 10)
    assert model.exit_params(3) == count_params(plain) and model.exit_params(1) < model.exit_params(2) < count_params(plain)
    student = build_model(make_config(method="byot", blocks=4, teacher_checkpoint=""), 1, 10)
    assert isinstance(student, MultiExitCNN) and not isinstance(build_model(make_config(blocks=4), 1, 10),
                                                                 MultiExitCNN)


def test_a_byot_run_is_measured_per_exit_and_with_early_exit(tmp_path, capsys):
    args = small_run_args(max_train_samples=200, max_test_samples=64, epochs=1, val_fraction=0.01)
    s = train.main(make_config(args + ["--method=byot", "--teacher_checkpoint=", "--blocks=4"], out_dir=str(tmp_path)))
    run = tmp_path / s["run_name"]
    assert s["hparams"] == {"byot_weight": 0.3, "byot_temperature": 3.0, "byot_feature_weight": 0.03}
    history = json.loads((run / "history.json").read_text())
    assert {"train_ce", "train_byot_kl", "train_byot_feat"} <= set(history[0])
    evaluate.main([f"--run={run}", "--exit=1"])
    evaluate.main([f"--run={run}", "--exit=auto", "--exit_threshold=0.5"])
    record = json.loads((run / "exits.json").read_text())
    one, auto = record["1"], record["auto@0.5"]
    assert one["params"] < s["params"] and one["latency_ms"] > 0 and 0 <= one["accuracy"] <= 100
    assert sum(auto["share_per_exit"].values()) == pytest.approx(100.0) and auto["mean_latency_ms"] > 0
    assert auto["exits"]["1"]["accuracy"] == one["accuracy"] and set(auto["exits"]) == {"1", "2"}
    line, _ = one_line_exit(evaluate.cli, [f"--run={run}", "--exit=3"], capsys, quiet=False)
    assert "has exits 1..2" in line


def test_exit_flags_that_cannot_work_are_one_line(tmp_path, capsys):
    args = small_run_args(max_train_samples=200, max_test_samples=64, epochs=1)
    s = train.main(make_config(args + ["--method=ce", "--blocks=2"], out_dir=str(tmp_path)))
    line, _ = one_line_exit(evaluate.cli, [f"--run={tmp_path / s['run_name']}", "--exit=1"], capsys, quiet=False)
    assert "single-exit student" in line
    with pytest.raises(UserError, match="--exit"):
        make_config(["--exit=first"])
    with pytest.raises(UserError, match="--method=byot with --student_arch"):
        make_config(method="byot", student_arch="timm:resnet10t", teacher_checkpoint="")
    with pytest.raises(UserError, match="--qat=int4 with --method=byot: quantizes single-exit students only"):
        make_config(method="byot", qat="int4", teacher_checkpoint="")
