"""Quantization-aware students as a user runs them (tiny idx data, the smoke teacher, 1-3 epochs): a QAT
run starts from an fp32 student, writes its deployable file, resumes after a kill to the same files,
evaluate.py rebuilds it from that file alone, bad combinations are one line, and the sweep builds the
PTQ contrasts, the QAT-CE / QAT-KD runs, their table and their plot."""
import json
import os
from functools import partial

import pytest
import torch

import evaluate
import plot_experiment_results
import run_experiments
import train
from config import make_config
from quant.packing import read_packed, weight_bits
from tests.fixtures import interrupt_after_first_epoch, one_line_exit, small_run_args

TEACHER = "fashion-mnist_teacher_seed12"


args = partial(small_run_args, batch_size=32, blocks=2)  # on fashion_idx


@pytest.fixture(scope="module")
def out(fashion_idx, tmp_path_factory):
    """A smoke teacher and the fp32 KD student (res2, 2 epochs) the QAT runs start from."""
    out = tmp_path_factory.mktemp("qat_out")
    train.main(make_config(args(fashion_idx, out, "--role=teacher")))
    train.main(make_config(args(fashion_idx, out, "--method=kd", "--epochs=2", "--run_name=fp32")))
    return out


def qat_args(data, out, mode, *extra):
    return args(data, out, f"--qat={mode}", f"--init_from={out / 'fp32'}", "--method=kd", *extra)


def test_a_ternary_run_resumes_after_a_kill_to_the_same_files(fashion_idx, out, monkeypatch):
    whole = train.main(make_config(qat_args(fashion_idx, out, "ternary", "--qat_epochs=3", "--run_name=whole")))
    with monkeypatch.context() as m:
        interrupt_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train.main(make_config(qat_args(fashion_idx, out, "ternary", "--qat_epochs=3", "--run_name=cut")))
    assert not (out / "cut" / "summary.json").exists() and (out / "cut" / "checkpoint.pt").exists()
    resumed = train.main(make_config(qat_args(fashion_idx, out, "ternary", "--qat_epochs=3", "--run_name=cut",
                                                     "--resume=True")))
    assert resumed["epochs_run"] == whole["epochs_run"] == 3  # --qat_epochs, not the preset's 1 epoch
    for key in ("best_test_acc", "qat_test_acc", "file_bytes", "bits_per_weight", "best_epoch"):
        assert resumed[key] == whole[key], key
    cut, uncut = (read_packed(out / r / "model.quant.safetensors") for r in ("cut", "whole"))
    assert cut[1:] == uncut[1:] and cut[0].keys() == uncut[0].keys()  # metadata; tensors, bit for bit:
    assert all(torch.equal(cut[0][k], uncut[0][k]) for k in cut[0])  # (safetensors orders metadata at random)
    bits = weight_bits(out / "whole" / "model.quant.safetensors")
    assert whole["bits_per_weight"] == bits["bits_per_weight"] and 1.6 < bits["bits_per_weight"] < 3
    assert whole["qat"] == "ternary" and whole["init_from"] == str(out / "fp32")
    assert whole["file_bytes"] < whole["fp32_bytes"] / 4


@pytest.mark.parametrize("mode,file", [("binary", "model.quant.safetensors"),  # int8: an export, ~25 s on 2 cores
                                       pytest.param("int8", "model.int8.pt2", marks=pytest.mark.slow)])
def test_evaluate_rebuilds_a_qat_run_from_its_deployable_file(fashion_idx, out, capsys, mode, file):
    summary = train.main(make_config(qat_args(fashion_idx, out, mode, f"--run_name={mode}")))
    run = out / mode
    assert summary["deploy_file"] == file and summary["file_bytes"] == os.path.getsize(run / file)
    capsys.readouterr()
    evaluate.cli([f"--run={run}", f"--data_dir={fashion_idx}"])
    printed = capsys.readouterr().out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["weights"] == file and result["accuracy"] == pytest.approx(summary["qat_test_acc"])
    assert ("no speed claim" in printed) == (mode == "binary")


def test_bad_combinations_are_one_line(fashion_idx, out, tmp_path, capsys):
    cases = [
        (args(fashion_idx, out, "--role=teacher", "--qat=ternary"), "the teacher stays fp32"),
        (qat_args(fashion_idx, out, "ternary", "--blocks=4"), "another model or dataset: blocks 2"),
        (qat_args(fashion_idx, out, "int8", "--method=fitnet"), "no intermediate feature maps"),
        (qat_args(fashion_idx, out, "int4", "--precision=bf16"), "fake quantization runs in fp32"),
        (args(fashion_idx, out, f"--init_from={out / 'fp32'}"), "only a QAT run"),
        (args(fashion_idx, out, "--qat=int3"), "allowed values are none, int8, int4, ternary, binary"),
        (args(fashion_idx, out, "--qat=int4", f"--init_from={tmp_path}"), "no config.json there"),
    ]
    other = tmp_path / "cifar_run"  # an fp32 student of another dataset
    other.mkdir()
    config = json.loads((out / "fp32" / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "dataset": "cifar10"}))
    cases.append((args(fashion_idx, out, "--qat=int4", f"--init_from={other}"), "dataset 'cifar10'"))
    for argv, says in cases:
        line, _ = one_line_exit(train.cli, argv, capsys)
        assert says in line, line


@pytest.mark.slow  # a whole sweep: PTQ, four QAT runs, the table and the plot
def test_the_sweep_adds_ptq_contrasts_qat_runs_their_table_and_plot(fashion_idx, out, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    argv = small_run_args(fashion_idx, sweep, "--sweep_blocks=[2]", "--sweep_precisions=[fp32]",
                          "--sweep_qat=[int4,binary]", "--qat_epochs=2", "--qat_lr=0.01",
                          f"--teacher_checkpoint={out / TEACHER}", batch_size=32)
    assert run_experiments.main(make_config(argv)) == 0
    names = sorted(os.listdir(sweep))
    qat = [n for n in names if "_q" in n]
    assert len(qat) == 4 and {n.split("_q")[1] for n in qat} == {"int4_s0", "binary_s0"}
    init = next(n for n in names if n.endswith("_fp32_kd_s0"))
    ptq = json.loads((sweep / init / "ptq.json").read_text())
    assert set(ptq) == {"int4", "binary"} and os.path.isfile(sweep / init / "ptq" / "binary.quant.safetensors")
    for n in qat:
        config = json.loads((sweep / n / "config.json").read_text())
        assert config["init_from"] == str(sweep / init) and config["epochs"] == 2 and config["lr"] == 0.01
    md = (sweep / "results.md").read_text()
    table = md.split("## Quantized students", 1)[1]
    for mode in ("int4", "binary"):
        for series in ("PTQ", "QAT-CE", "QAT-KD"):
            assert f"| res2 | {mode} | {series} |" in table
    main_table = md.split("## Quantized students", 1)[0]
    assert "_q" not in main_table and main_table.count("| res2 |") == 2  # the fp32 CE control and KD only
    capsys.readouterr()
    assert plot_experiment_results.main(str(sweep)) == 0
    assert os.path.isfile(sweep / "plots" / "qat_accuracy_vs_bytes.png")
