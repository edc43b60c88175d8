"""Teacher-free methods (distill/tfkd.py, distill/pskd.py): their losses against hand computations, the
per-image buffer PS-KD learns from, that it is saved in checkpoint.pt and a resumed run continues from it,
and the one-line refusals (a teacher named, mixup, torchrun)."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import train
from config import make_config
from distill import build_distiller
from distill.pskd import PredictionBuffer, pskd_targets
from distill.tfkd import tfkd_loss, virtual_teacher
from models.cnn_model import ResidualCNN
from runtime import cuda_graphs
from tests.fixtures import interrupt_after_first_epoch, one_line_exit, small_run_args
from utils.errors import UserError
from utils.run_files import RUN_WEIGHTS

SMALL = small_run_args(max_train_samples=200, max_test_samples=64, epochs=3, val_fraction=0.01)


def test_virtual_teacher_is_the_papers_softened_hand_made_distribution():
    y = torch.tensor([2, 0])
    p = virtual_teacher(y, 10, prob=0.99, temperature=20.0)
    u = torch.full((10,), 0.01 / 9)
    u[2] = 0.99
    assert torch.allclose(p[0], F.softmax(u / 20.0, dim=0)) and torch.allclose(p.sum(1), torch.ones(2))
    assert p[0].argmax() == 2 and p[1].argmax() == 0 and p[0, 2] < 0.2  # nearly flat at T 20: a smoothing
    sharp = virtual_teacher(y, 10, prob=0.99, temperature=0.05)
    assert sharp[0, 2] > 0.99  # a low temperature keeps the hand-made peak


def test_tfkd_loss_is_ce_plus_kl_to_the_virtual_teacher():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    terms = tfkd_loss(logits, y, weight=0.3, prob=0.9, temperature=2.0)
    p = virtual_teacher(y, 10, 0.9, 2.0)
    kl = (p * (p.log() - F.log_softmax(logits, 1))).sum(1).mean()
    assert torch.isclose(terms["ce"], 0.7 * F.cross_entropy(logits, y)) and torch.isclose(terms["tfkd"], 0.3 * kl)
    assert tfkd_loss(p.log(), y, 1.0, 0.9, 2.0)["tfkd"].abs() < 1e-6  # a student that is the virtual teacher


def test_pskd_buffer_reads_one_hot_until_written_and_survives_a_state_dict():
    buf = PredictionBuffer()
    one_hot = F.one_hot(torch.tensor([1, 3]), 5).float()
    assert torch.equal(buf.read(torch.tensor([7, 2]), one_hot), one_hot)  # nothing stored yet
    probs = torch.softmax(torch.randn(2, 5), 1)
    buf.write(torch.tensor([7, 2]), probs)
    assert torch.allclose(buf.read(torch.tensor([2, 7]), one_hot), probs.flip(0))
    mixed = buf.read(torch.tensor([2, 0]), one_hot)
    assert torch.allclose(mixed[0], probs[1]) and torch.equal(mixed[1], one_hot[1])  # row 0 never written
    fresh = PredictionBuffer()
    fresh.load_state_dict(buf.state_dict())
    assert torch.equal(fresh.probs, buf.probs) and torch.equal(fresh.seen, buf.seen)
    assert torch.allclose(pskd_targets(one_hot, probs, 0.25), 0.75 * one_hot + 0.25 * probs)


def test_pskd_targets_grow_linearly_to_alpha_at_the_last_epoch():
    cfg = make_config(method="pskd", pskd_alpha=0.8, epochs=4, teacher_checkpoint="")
    d = build_distiller(cfg, ResidualCNN(2, 1, 10))
    x, y, idx = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), torch.arange(4)
    logits, first = d.forward_train(x, y, None, 0, idx)
    assert torch.isclose(first["ce"], F.cross_entropy(logits, y), atol=1e-5)  # epoch 1: the labels alone
    prev = d.memory.probs[:4].clone()
    logits, last = d.forward_train(x, y, None, 3, idx)
    target = 0.2 * F.one_hot(y, 10).float() + 0.8 * prev
    assert torch.isclose(last["ce"], F.cross_entropy(logits, target), atol=1e-5)


def test_pskd_trains_saves_its_buffer_and_resumes_to_the_same_run(tmp_path, monkeypatch):
    args = SMALL + ["--method=pskd", "--teacher_checkpoint=", "--blocks=2"]
    out = str(tmp_path)
    s = train.main(make_config(args, out_dir=out, run_name="straight"))
    assert s["status"] == "complete" and s["hparams"] == {"pskd_alpha": 0.8} and "teacher_acc" not in s
    ck = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    memory = ck["trainable"]["memory"]
    assert memory["seen"].sum() > 0 and torch.allclose(memory["probs"][memory["seen"]].sum(1), torch.ones(1))
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        interrupt_after_first_epoch(m)
        train.main(make_config(args, out_dir=out, run_name="resumed"))
    train.main(make_config(args + ["--resume=True"], out_dir=out, run_name="resumed"))
    keys = ("train_loss", "val_acc", "test_acc")
    a = json.loads((tmp_path / "straight" / "history.json").read_text())
    b = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [[h.get(k) for k in keys] for h in a] == [[h.get(k) for k in keys] for h in b]
    for name in RUN_WEIGHTS:  # the same weights, to the bit
        x, y = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_tfkd_trains_without_a_teacher(tmp_path):
    s = train.main(make_config(SMALL + ["--method=tfkd", "--teacher_checkpoint=", "--epochs=1"], out_dir=str(tmp_path)))
    assert s["status"] == "complete" and s["hparams"] == {"tfkd_weight": 0.1, "tfkd_temperature": 20.0,
                                                          "tfkd_prob": 0.99}
    assert not list(tmp_path.glob("*teacher*"))  # no teacher was trained or looked for


@pytest.mark.parametrize("method", ["tfkd", "pskd"])
def test_a_named_teacher_is_refused_in_one_line(method, capsys):
    line, _ = one_line_exit(train.cli, ["--preset=demo", f"--method={method}"], capsys)
    assert f"--method={method} learns without a teacher" in line and '--teacher_checkpoint=""' in line


def test_pskd_refuses_mixup_and_runs_eager_steps():
    with pytest.raises(UserError, match="--method=pskd with --mixup"):
        make_config(method="pskd", mixup=0.2, teacher_checkpoint="")
    capture, why = cuda_graphs.plan(make_config(method="pskd", cuda_graphs=True), torch.device("cuda"), "fp32")
    assert not capture and "per-image buffer" in why


def test_a_sweep_of_teacher_free_methods_plans_no_teacher(tmp_path):
    from sweep.plan import grid

    runs = grid(make_config(["--preset=smoke", "--sweep_methods=[tfkd,pskd]", "--sweep_precisions=[fp32]"],
                            out_dir=str(tmp_path), sweep_blocks=(2,)))
    assert [(c.role, c.method) for c in runs] == [("student", "ce"), ("student", "tfkd"), ("student", "pskd")]
    with_kd = grid(make_config(["--preset=smoke", "--sweep_methods=[tfkd,kd]"], out_dir=str(tmp_path)))
    assert with_kd[0].role == "teacher"
