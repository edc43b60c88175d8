"""The epoch loop on its own, with a stub distiller: it knows no method, feeds every batch to the teacher
source and the distiller, steps the optimizer and schedule once per batch, and averages the terms."""
import pytest
import torch
from torch import nn

from config import make_config
from data.dataset import Split
from data.sampler import BatchSampler
from distill.base import Distiller, TeacherOut
from runtime.epochs import RunFailed, Trainee, build_optimizer, build_scheduler, train_epoch
from utils.precision import setup_precision


class Stub(Distiller):
    """Logits from a linear layer; two fixed-size terms so the averages are known exactly."""

    name = "stub"

    def __init__(self, student, cfg, scale=1.0):
        super().__init__(student, cfg)
        self.scale, self.calls = scale, []

    def forward_train(self, x, y, teacher_out, epoch):
        self.calls.append((x.shape[0], None if teacher_out is None else teacher_out.logits.shape, epoch))
        logits = self.student(x.flatten(1))
        zero = logits.sum() * 0.0  # keeps the graph, adds nothing
        return logits, {"a": zero + 1.0 * self.scale, "b": zero + 2.0 * self.scale}


def make(n=40, batch=8, scale=1.0):
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g), torch.arange(n) % 3)
    cfg = make_config(batch_size=batch, epochs=2, lr=0.1, optimizer="sgd", schedule="cosine")
    stub = Stub(nn.Linear(16, 3), cfg, scale)
    opt = build_optimizer(cfg, stub.learnable_parameters())
    sampler = BatchSampler(data, batch, "flip", (0.5,), (0.25,), False, g)
    trainee = Trainee(stub, opt, build_scheduler(cfg, opt, sampler.steps),
                      setup_precision("fp32", stub.student, torch.device("cpu")))
    return trainee, sampler


def test_loop_feeds_every_batch_and_sums_the_terms():
    trainee, sampler = make(n=44, batch=8)  # 5 full batches, the ragged 4 dropped
    seen = []
    teacher = lambda batch: seen.append(batch.idx.clone()) or TeacherOut(torch.zeros(batch.y.shape[0], 3))
    before = trainee.distiller.student.weight.detach().clone()
    stats = train_epoch(trainee, sampler, teacher, epoch=1)
    assert [c for c in trainee.distiller.calls] == [(8, (8, 3), 1)] * 5
    assert len(seen) == 5 and len(torch.cat(seen).unique()) == 40  # distinct images, one order
    assert stats.terms == pytest.approx({"a": 1.0, "b": 2.0}) and stats.loss == pytest.approx(3.0)
    assert 0.0 <= stats.acc <= 100.0 and stats.seconds > 0
    assert trainee.scheduler.last_epoch == 5  # stepped once per batch
    assert torch.equal(before, trainee.distiller.student.weight)  # the terms carry no gradient here
    assert trainee.distiller.training


def test_no_teacher_means_no_teacher_outputs():
    trainee, sampler = make()
    train_epoch(trainee, sampler, None, epoch=0)
    assert all(c[1] is None for c in trainee.distiller.calls)


def test_non_finite_loss_fails_the_run_with_a_hint():
    trainee, sampler = make(scale=float("nan"))
    with pytest.raises(RunFailed, match="non-finite training loss at epoch 1: try a lower --lr"):
        train_epoch(trainee, sampler, None, epoch=0)


def test_same_generator_same_batches():
    a, sa = make()
    b, sb = make()
    xa = [batch.x for batch in sa.epoch()]
    xb = [batch.x for batch in sb.epoch()]
    assert all(torch.equal(u, v) for u, v in zip(xa, xb)) and len(xa) == sa.steps == 5


def test_graph_capture_falls_back_with_its_reason():
    from runtime import cuda_graphs

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    on = make_config(cuda_graphs=True)
    assert cuda_graphs.plan(make_config(), cuda, "fp32") == (False, "eager steps")
    assert cuda_graphs.plan(on, cpu, "fp32")[1] == "eager steps: CUDA graphs need a CUDA device, this run is on cpu"
    assert "GradScaler" in cuda_graphs.plan(on, cuda, "fp16")[1] and not cuda_graphs.plan(on, cuda, "fp16")[0]
    assert "fp8" in cuda_graphs.plan(on, cuda, "fp8")[1]
    assert "8-bit" in cuda_graphs.plan(make_config(cuda_graphs=True, optimizer="adam8bit"), cuda, "fp32")[1]
    assert cuda_graphs.plan(on, cuda, "bf16")[0] and cuda_graphs.plan(on, cuda, "fp32")[0]


def test_the_learning_rate_is_a_float_even_when_the_optimizer_holds_a_tensor():
    # a captured CUDA-graph step keeps lr as a device tensor (runtime/cuda_graphs.py); history.json needs a number
    trainee, sampler = make()
    cfg = make_config(batch_size=8, epochs=2, lr=0.1, optimizer="sgd", schedule="cosine")
    opt = build_optimizer(cfg, trainee.distiller.learnable_parameters(), lr=torch.tensor(0.1))
    tensor_lr = Trainee(trainee.distiller, opt, build_scheduler(cfg, opt, sampler.steps), trainee.prec)
    assert torch.is_tensor(opt.param_groups[0]["lr"])
    assert type(tensor_lr.lr) is float and tensor_lr.lr == opt.param_groups[0]["lr"].item() > 0
