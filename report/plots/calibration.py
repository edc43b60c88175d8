"""The reliability diagram (plots/reliability_diagram.png): the best student's and its CE control's accuracy
per confidence bin against the diagonal of perfect calibration, from their summaries' test_calibration_bins
(the selected epoch on the test split; runtime/inference.calibration_bins)."""
import os

from report.plots.data import Run, students
from report.plots.style import plt, save_figure
from report.results import control_precisions, selection_acc, student_key
from utils.names import CONTROL

BINS_KEY = "test_calibration_bins"


def best_and_control(runs: list) -> list:
    """The student with the best selection accuracy (validation where runs have one) and the CE control of its
    depth, seed and precision (the fp32 one where there is none), each only where its summary has the bins; the
    control is left out when it is the best."""
    ranked = [r for r in students(runs) if r.acc is not None and isinstance(r.summary.get(BINS_KEY), dict)]
    if not ranked:
        return []
    best = max(ranked, key=lambda r: selection_acc(r.summary))
    controls = [r for r in ranked if r.get("method") == CONTROL and r is not best and not r.get("unlabeled_images")
                and student_key(r.summary) == student_key(best.summary) and r.get("seed") == best.get("seed")]
    control = next((r for p in control_precisions(best.get("precision")) for r in controls if r.get("precision") == p),
                   None)
    return [best] + ([control] if control else [])


def plot_reliability(runs: list, path: str):
    """The figure; None (and a printed line) where no student recorded its calibration bins (older runs)."""
    pair = best_and_control(runs)
    if not pair:
        print(f"skipped {os.path.basename(path)}: no student summary has {BINS_KEY} (runs from before it)")
        return None
    fig, axes = plt.subplots(1, len(pair), figsize=(4.6 * len(pair), 4.4), squeeze=False)
    for ax, run in zip(axes[0], pair):
        draw_bins(ax, run)
    save_figure(fig, path)
    return path


def draw_bins(ax, run: Run) -> None:
    b = run.summary[BINS_KEY]
    width = 1.0 / b["bins"]
    lefts = [i * width for i in range(b["bins"])]
    kept = [i for i, n in enumerate(b["count"]) if n]
    accuracy = [b["correct"][i] / b["count"][i] for i in kept]
    confidence = [b["confidence"][i] / b["count"][i] for i in kept]
    ax.bar([lefts[i] for i in kept], accuracy, width=width, align="edge", edgecolor="black", color="#1f77b4",
           label="accuracy in the bin")
    ax.bar([lefts[i] for i in kept], [abs(c - a) for a, c in zip(accuracy, confidence)], width=width, align="edge",
           bottom=[min(a, c) for a, c in zip(accuracy, confidence)], fill=False, hatch="//", edgecolor="#d62728",
           label="gap to the bin's mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-class softmax)", ylabel="accuracy")
    role = "CE control" if run.get("method") == CONTROL else "best student"
    ax.set_title(f"{role}: {run.name}\nECE {run.get('test_ece', float('nan')):.2f}% ({b['bins']} bins), "
                 f"NLL {run.get('test_nll', float('nan')):.3f}, acc {run.acc:.2f}%", fontsize=8)
    ax.legend(loc="upper left", fontsize=7)
