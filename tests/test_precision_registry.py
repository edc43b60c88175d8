"""The precision table (utils/precision_table.py) is the one place a precision is declared: no other product
module names one, the behaviour it declares is the behaviour a run gets (autocast dtype, GradScaler, CUDA-graph
refusal, the sweep's CPU substitute and optimizer), summaries record what ran as fields, and the readers give
an old summary (prose only) the labels they always gave it."""
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

import config
import run_experiments
import train
from config import Config, make_config
from report.plots.data import Run, precision_label
from runtime import cuda_graphs
from tests.fixtures import ROOT, literals_outside
from utils import precision_table
from utils.precision import setup_precision
from utils.precision_table import (AUTO, BF16, CHOICES, FP8, FP16, FP32, PRECISION_DOC, PRECISION_TABLE, PRECISIONS,
                                   TEACHER_CHOICES, TRAINED, precision_how)
from utils.run_files import FP8_LAYERS, PRECISION_KEYS, SUBSTITUTED_FOR, summary_defect

TABLE_FILE = "utils/precision_table.py"
MAY_NAME_ANY_PRECISION = {TABLE_FILE, "presets.py"}  # the table, and the presets' recipes and sweeps (values)
# Ray's own address word "auto", and --exit=auto (early exit), no precision
OTHER_MEANING = {"runtime/ray_sweep.py": {AUTO}, "utils/names.py": {AUTO}}
CPU = torch.device("cpu")


def test_a_precision_is_named_only_in_the_table_and_the_presets():
    found = literals_outside(set(PRECISIONS), lambda rel, name: rel in MAY_NAME_ANY_PRECISION
                             or name in OTHER_MEANING.get(rel, ()))
    assert not found, "\n".join(found)
    assert all((ROOT / rel).is_file() for rel in OTHER_MEANING)


def test_config_takes_its_choices_and_docs_from_the_table():
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert config.PRECISIONS == TRAINED == (FP32, FP16, BF16, FP8) and CHOICES == TRAINED + (AUTO,)
    assert fields["precision"].metadata["doc"] == PRECISION_DOC and PRECISION_DOC.startswith("fp32 | fp16 (")
    assert fields["precision"].metadata["check"].says == f"allowed values are {', '.join(CHOICES)}"
    assert fields["teacher_precision"].metadata["check"].says == "allowed values are fp32, bf16, auto"
    assert fields["fp16_on_cpu"].metadata["check"].says == "allowed values are bf16, fp16"
    assert TEACHER_CHOICES == tuple(p.name for p in PRECISION_TABLE if p.teacher)
    assert Config().precision == FP32 and Config().sweep_precisions == (FP32, FP16, FP8)


@pytest.mark.parametrize("name", TRAINED)
def test_setup_precision_builds_what_the_table_declares(name):
    spec = PRECISIONS[name]
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10))
    prec = setup_precision(name, model, CPU)
    assert prec.autocast_dtype == (getattr(torch, spec.dtype) if spec.dtype else None)
    assert (prec.scaler is not None) == spec.grad_scaler
    assert prec.nonfinite_hint() == spec.nonfinite_hint and set(prec.record) == set(PRECISION_KEYS)
    assert prec.record[FP8_LAYERS] == ({"simulated": 2, "native": 0} if spec.converter else None)
    assert prec.description == {FP32: "fp32 on cpu", FP16: "fp16: autocast float16 + GradScaler on cpu",
                                BF16: "bf16: autocast bfloat16 on cpu"}.get(name, prec.description)
    assert name != FP8 or prec.description.startswith("fp8: simulated e4m3 weights+activations")


def test_the_pseudo_precision_never_runs_itself():
    with pytest.raises(ValueError, match="unknown precision 'auto'"):
        setup_precision(AUTO, torch.nn.Linear(2, 2), CPU)


def test_an_entry_changed_changes_the_behaviour(monkeypatch):
    """The switch and the CUDA-graph plan read the entry, not the name."""
    monkeypatch.setitem(PRECISIONS, BF16, dataclasses.replace(PRECISIONS[BF16], grad_scaler=True,
                                                              graph_refusal="a test's refusal"))
    assert setup_precision(BF16, torch.nn.Linear(2, 2), CPU).scaler is not None
    cfg = SimpleNamespace(cuda_graphs=True, optimizer="adam", role="student", method="kd")
    assert cuda_graphs.plan(cfg, torch.device("cuda"), BF16) == (False, "eager steps: a test's refusal")


def test_cuda_graphs_refuse_what_the_table_says_word_for_word():
    cfg, cuda = SimpleNamespace(cuda_graphs=True, optimizer="adam", role="student", method="kd"), torch.device("cuda")
    assert cuda_graphs.plan(cfg, cuda, FP16) == (
        False, "eager steps: fp16's GradScaler checks for inf on the host every step, outside any graph")
    assert cuda_graphs.plan(cfg, cuda, FP8) == (False, "eager steps: simulated fp8 re-scales with host-side control "
                                                       "flow")
    for name in (FP32, BF16):
        assert cuda_graphs.plan(cfg, cuda, name)[0]


def test_the_sweep_substitutes_and_overrides_from_the_table():
    base = make_config(["--preset=smoke", "--device=cpu"])
    half = run_experiments.student_config(base, 2, FP16, "kd", 0)
    assert (half.precision, half.substituted_for) == (BF16, FP16)
    assert half.precision_note == "in place of fp16 (fp16 autocast on this CPU trains ~100x slower)"
    real = run_experiments.student_config(dataclasses.replace(base, fp16_on_cpu=FP16), 2, FP16, "kd", 0)
    assert (real.precision, real.substituted_for, real.precision_note) == (FP16, "", "")
    assert run_experiments.student_config(base, 2, FP8, "kd", 0).optimizer == "adam8bit"
    assert run_experiments.student_config(dataclasses.replace(base, optimizer="sgd"), 2, FP8, "kd", 0).optimizer \
        == "sgd"
    assert run_experiments.student_config(base, 2, BF16, "kd", 0).substituted_for == ""


def test_a_student_in_place_of_fp16_records_it_and_the_readers_read_the_field(tmp_path):
    base = make_config(["--preset=smoke", "--device=cpu", "--max_train_samples=128", f"--out_dir={tmp_path}"])
    s = train.main(run_experiments.student_config(base, 2, FP16, "ce", 0))
    assert s[SUBSTITUTED_FOR] == FP16 and s[FP8_LAYERS] is None and summary_defect(s) is None
    assert "(in place of fp16 (fp16 autocast" in s["precision_description"]  # the sentence stays for people
    assert json.loads((tmp_path / s["run_name"] / "summary.json").read_text())[SUBSTITUTED_FOR] == FP16
    assert precision_how(s) == "bf16 autocast on cpu in place of fp16"
    run = Run(s["run_name"], str(tmp_path), s, [])
    assert precision_label([run], BF16) == "bf16 (in place of fp16)"
    # the field decides, never the sentence, in a summary that has the field
    reworded = {**s, "precision_description": "bf16 autocast, standing in"}
    assert precision_how(reworded) == "bf16 autocast on cpu in place of fp16"
    assert precision_label([Run("x", "x", {**s, SUBSTITUTED_FOR: None}, [])], BF16) == BF16


# what results.precision_how and plots.data.precision_label were before the table, kept as the reference for
# old summaries (their description sentence is all they record)
def old_precision_how(summary: dict) -> str:
    desc = summary.get("precision_description") or ""
    p = summary.get("precision", "")
    if p == "fp8":
        kind = "native+simulated" if "native" in desc else "simulated"
        return f"fp8 {kind} e4m3/e5m2"
    if p == "fp16":
        return f"fp16 autocast+GradScaler on {summary.get('device', '?')}"
    if p == "bf16":
        note = " in place of fp16" if "in place of fp16" in desc else ""
        return f"bf16 autocast on {summary.get('device', '?')}{note}"
    return f"fp32 on {summary.get('device', '?')}" if summary.get("device") else p


def old_precision_label(summaries: list, precision: str) -> str:
    descs = " ".join(s.get("precision_description", "") for s in summaries if s.get("precision", "fp32") == precision)
    if precision == "fp8":
        return "fp8 (native)" if "native" in descs and "simulat" not in descs else "fp8 (simulated e4m3/e5m2)"
    if precision == "bf16" and "in place of fp16" in descs:
        return "bf16 (in place of fp16)"
    return precision


OLD = [  # summaries written before the fields: the precision, the device and the sentence
    ("fp32", "cpu", "fp32 on cpu"),
    ("fp32", None, "fp32"),
    ("fp16", "cuda:0", "fp16: autocast float16 + GradScaler on cuda"),
    ("bf16", "cpu", "bf16: autocast bfloat16 on cpu (in place of fp16 (fp16 autocast on this CPU trains ~100x "
                    "slower))"),
    ("bf16", "cpu", "bf16: autocast bfloat16 on cpu (auto: bf16 (training step measured 1.67x the speed of fp32))"),
    ("fp8", "cpu", "fp8: simulated e4m3 weights+activations / e5m2 gradients, per-tensor dynamic scaling, all 9 "
                   "conv/linear layers on cpu"),
    ("fp8", "cuda", "fp8: 2 Linear native torchao Float8Linear, 7 conv/linear simulated (e4m3/e5m2, per-tensor "
                    "dynamic scaling) on cuda"),
    ("fp8", "cpu", "fp8: no Conv2d/Linear layers found, nothing converted (model runs in its own precision) on cpu"),
]


@pytest.mark.parametrize("precision, device, desc", OLD)
def test_an_old_summary_reads_as_it_always_did(precision, device, desc):
    s = {"status": "complete", "precision": precision, "precision_description": desc,
         **({"device": device} if device else {})}
    assert precision_how(s) == old_precision_how(s)
    assert precision_label([Run("x", "x", s, [])], precision) == old_precision_label([s], precision)


def test_the_released_teachers_read_as_before():
    for name in ("fashion-mnist_teacher_resnet20", "fashion-mnist_teacher_resnet32"):
        s = json.loads((ROOT / "teachers" / name / "summary.json").read_text())
        assert SUBSTITUTED_FOR not in s and precision_how(s) == old_precision_how(s)
        assert precision_label([Run(name, name, s, [])], s["precision"]) == s["precision"]


def test_the_plots_label_every_old_sweep_as_before():
    sweep = [{"precision": p, "precision_description": d, "device": dev} for p, dev, d in OLD if dev]
    for p in TRAINED:
        assert precision_label([Run("x", "x", s, []) for s in sweep], p) == old_precision_label(sweep, p)


def test_fp8_layers_recorded_read_as_counts():
    s = {"precision": FP8, SUBSTITUTED_FOR: None, FP8_LAYERS: {"simulated": 9, "native": 0},
         "precision_description": "anything"}
    assert precision_how(s) == "fp8 simulated e4m3/e5m2"
    assert precision_how({**s, FP8_LAYERS: {"simulated": 7, "native": 2}}) == "fp8 native+simulated e4m3/e5m2"
    assert precision_table.recorded_precision({**s, FP8_LAYERS: {"simulated": 0, "native": 2}}).fp8_native
