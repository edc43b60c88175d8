"""Calibration in every evaluation: the expected calibration error (15 equal-width confidence bins) and the
negative log-likelihood of the selected epoch on the test split, in summary.json, history.json, results.csv and
results.md and evaluate.py's evaluation.json. Hand-computed cases and a tiny run: seconds."""
import json
import math

import pytest
import torch

import evaluate
import train
from config import make_config
from report.results import collect_results, markdown_table
from report.plots.calibration import best_and_control, plot_reliability
from report.plots.data import Run
from runtime.inference import ECE_BINS, calibration_bins, calibration_error, ece_of, evaluate_logits
from tests.fixtures import small_run_args


def two_class_logits(p_first: list) -> torch.Tensor:
    """Logits whose softmax gives class 0 the probability p (and class 1 the rest), one row per p."""
    p = torch.tensor(p_first, dtype=torch.float64)
    return torch.stack([torch.log(p), torch.log1p(-p)], 1).float()


def test_ece_of_a_hand_computed_case():
    # confidences 0.9, 0.9, 0.6, 0.6 (class 0 each); right, wrong, right, right. Bin of 0.9: accuracy 0.5 at
    # confidence 0.9, a gap of 0.4 for half the images; bin of 0.6: accuracy 1.0 at 0.6, a gap of 0.4 for
    # the other half. ECE = 0.5 * 0.4 + 0.5 * 0.4 = 0.4, i.e. 40%.
    logits, labels = two_class_logits([0.9, 0.9, 0.6, 0.6]), torch.tensor([0, 1, 0, 0])
    assert calibration_error(logits, labels) == pytest.approx(40.0, abs=1e-4)
    # one bin holding both: a wrong and a right answer at 0.9 and 0.8 (bins of width 1/15 put them apart)
    assert calibration_error(two_class_logits([0.9, 0.8]), torch.tensor([1, 0]), bins=1) == pytest.approx(
        abs((0 + 1) / 2 - (0.9 + 0.8) / 2) * 100, abs=1e-4)
    certain = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])
    assert calibration_error(certain, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-6)  # sure and right
    assert calibration_error(certain, torch.tensor([1, 0])) == pytest.approx(100.0, abs=1e-6)  # sure and wrong
    assert math.isnan(calibration_error(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_ece_matches_a_loop_over_the_bins():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(500, 10, generator=g) * 3, torch.randint(0, 10, (500,), generator=g)
    conf, pred = logits.softmax(1).max(1)
    ece = 0.0
    for b in range(ECE_BINS):
        inside = (conf > b / ECE_BINS) & (conf <= (b + 1) / ECE_BINS)
        if inside.any():
            gap = (pred[inside] == labels[inside]).float().mean() - conf[inside].mean()
            ece += inside.float().mean().item() * abs(gap.item())
    assert calibration_error(logits, labels) == pytest.approx(100 * ece, abs=1e-3)
    b = calibration_bins(logits, labels)
    assert sum(b["count"]) == 500 and b["bins"] == ECE_BINS and ece_of(b) == calibration_error(logits, labels)
    assert sum(b["correct"]) == (pred == labels).sum().item()


def test_a_run_records_the_calibration_of_its_selected_epoch(fashion_idx, tmp_path, capsys):
    argv = small_run_args(fashion_idx, tmp_path, "--role=teacher", "--val_fraction=0.2", "--select_from=0",
                          batch_size=32, epochs=3)
    summary = train.main(make_config(argv))
    run = tmp_path / summary["run_name"]
    history = json.loads((run / "history.json").read_text())
    best = history[summary["best_epoch"] - 1]
    assert summary["test_nll"] == best["test_loss"] and summary["test_ece"] == best["test_ece"]
    assert 0 <= summary["test_ece"] <= 100 and summary["test_nll"] > 0
    assert [r["epoch"] for r in history if "test_ece" in r] == [summary["best_epoch"]]  # the selected one alone
    bins = summary["test_calibration_bins"]
    assert sum(bins["count"]) == summary["test_images"] and ece_of(bins) == pytest.approx(summary["test_ece"])
    # evaluate.py reads the same weights: the same ECE and NLL in evaluation.json
    capsys.readouterr()
    evaluate.cli([f"--run={run}"])
    assert "ECE" in capsys.readouterr().out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["ece"] == pytest.approx(summary["test_ece"], abs=1e-4) and result["ece_bins"] == ECE_BINS
    assert result["nll"] == pytest.approx(summary["test_nll"], rel=1e-5)
    # results.csv / results.md carry them; an old summary without them shows '-'
    rows = collect_results(str(tmp_path), [str(run)])
    assert rows[0]["test_ece"] == summary["test_ece"] and rows[0]["test_nll"] == summary["test_nll"]
    header, rule, teacher = markdown_table(rows).splitlines()[:3]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in teacher.split("|")]))
    assert cells["ECE %"] == f"{summary['test_ece']:.2f}" and cells["NLL"] == f"{summary['test_nll']:.3f}"
    old = dict(rows[0], test_ece=None, test_nll=None)
    old_cells = dict(zip([c.strip() for c in header.split("|")],
                         [c.strip() for c in markdown_table([old]).splitlines()[2].split("|")]))
    assert old_cells["ECE %"] == "-" and old_cells["NLL"] == "-"


def test_nll_is_the_mean_cross_entropy():
    logits, labels = two_class_logits([0.9, 0.6]), torch.tensor([0, 1])
    assert evaluate_logits(logits, labels)[0] == pytest.approx(-(math.log(0.9) + math.log(0.4)) / 2, rel=1e-5)


def test_the_reliability_diagram_shows_the_best_student_and_its_control(tmp_path, capsys):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (300,), generator=g)

    def student(method, acc, scale, precision="fp32"):
        logits = torch.randn(300, 10, generator=g) * scale
        return Run(f"res4_{method}_{precision}", str(tmp_path), {
            "role": "student", "status": "complete", "method": method, "blocks": 4, "seed": 0, "precision": precision,
            "best_test_acc": acc, "test_ece": calibration_error(logits, labels), "test_nll": 1.0,
            "test_calibration_bins": calibration_bins(logits, labels)}, [])
    kd, ce = student("kd", 81.0, 3.0), student("ce", 79.0, 6.0)
    # the best student's control is the one of its own precision (else the fp32 one)
    kd16, ce16 = student("kd", 82.0, 3.0, "bf16"), student("ce", 78.0, 6.0, "bf16")
    assert [r.name for r in best_and_control([ce, kd, ce16, kd16])] == ["res4_kd_bf16", "res4_ce_bf16"]
    assert [r.name for r in best_and_control([ce, kd, kd16])] == ["res4_kd_bf16", "res4_ce_fp32"]
    path = plot_reliability([ce, kd], str(tmp_path / "reliability_diagram.png"))
    assert path and (tmp_path / "reliability_diagram.png").stat().st_size > 10_000
    old = Run("res4_kd_old", str(tmp_path), {"role": "student", "status": "complete", "method": "kd", "blocks": 4,
                                              "best_test_acc": 80.0}, [])
    assert plot_reliability([old], str(tmp_path / "none.png")) is None
    assert "no student summary has test_calibration_bins" in capsys.readouterr().out
