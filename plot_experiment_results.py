"""Plot a finished sweep: reads only the files under out_dir, writes PNGs to out_dir/plots/.

    python plot_experiment_results.py                      # out_dir = checkpoints
    python plot_experiment_results.py --preset=demo        # checkpoints/demo
    python plot_experiment_results.py --out_dir=/tmp/sweep

Needs matplotlib and numpy, not torch or the training code: a run directory is re-read from its
summary.json, history.json, evaluation.json (evaluate.py) and deploy.json (the deploy step). Failed
runs are left out. One line per file written; a missing or empty out_dir stops with exit code 2.

    accuracy_curves.png / loss_curves.png   val (or test) accuracy / loss per epoch, one panel per precision
    accuracy_vs_params.png                  best accuracy vs parameters, per precision, teacher line
    kd_gain.png                             KD vs the CE control per depth, gain in points
    seconds_per_epoch.png                   training time per epoch, every grid point and the teacher
    confusion_matrix_best_student.png       from the best student's evaluation.json (if evaluate.py ran)
    reliability_diagram.png                 accuracy per confidence bin of the best student and its CE control
    deploy_accuracy_vs_latency.png / deploy_accuracy_vs_bytes.png   with Pareto frontier (if deployed)
    qat_accuracy_vs_bytes.png               PTQ, QAT-CE and QAT-KD students: accuracy vs file bytes (--sweep_qat)
    kd_gain_vs_data.png                     gain over the control against labeled images (--sweep_train_samples;
                                            each size's own figures in <out_dir>/n<N>/plots/)

An out_dir holding runs of several datasets gets one set per dataset, named <dataset>_<plot>.png.
"""
import os
import sys
import traceback

from config import make_config
from report.plots.calibration import plot_reliability
from report.plots.data import by_dataset, context_line, load_runs, students
from report.plots.deploy import plot_deploy
from report.plots.runs import plot_accuracy_vs_params, plot_curves, plot_kd_gain, plot_seconds_per_epoch
from report.plots.style import plot_confusion_matrix
from report.qat import plot_qat, qat_points
from report.results import is_segment, quantized, selection_acc
from utils.errors import cli_entry
from utils.run_files import DEPLOY_JSON, PLOTS_DIR, SEGMENTATION_EXAMPLES


def plot_best_confusion(runs: list, path: str):
    """The best student's confusion matrix from its evaluation.json; None (and a printed line) without one.
    Never computes one here: that needs the model, torch and the data (evaluate.py does it)."""
    ranked = [r for r in students(runs) if r.acc is not None]
    if not ranked:
        print(f"skipped {os.path.basename(path)}: no finished student run")
        return None
    best = max(ranked, key=lambda r: selection_acc(r.summary))  # chosen on val where runs have one
    ev = best.evaluation if isinstance(best.evaluation, dict) else {}
    cm = ev.get("confusion_matrix")
    if not cm:
        print(f"skipped {os.path.basename(path)}: evaluate.py has not been run for the best student "
              f"{best.name} ({best.acc:.2f}%); run: python evaluate.py --run={best.dir}")
        return None
    classes = ev.get("classes") or best.get("classes") or [str(i) for i in range(len(cm))]
    acc = ev.get("accuracy", best.acc)
    plot_confusion_matrix(cm, classes, path,
                          f"Best student {best.name}\ntest accuracy {acc:.2f}% "
                          f"({best.method}, {best.precision}, {best.get('params', 0):,} params)\n"
                          f"{context_line([best])}".replace(" | ", "\n"))
    return path


def plot_dataset(runs: list, plots_dir: str, prefix: str) -> int:
    """Every figure for one dataset's runs; returns how many figures failed (each failure is reported)."""
    out = lambda name: os.path.join(plots_dir, f"{prefix}{name}.png")  # noqa: E731
    qat = [r for r in runs if quantized(r.summary)]  # their own figure; the others show fp32 students
    runs = [r for r in runs if not quantized(r.summary)]
    have_students = bool(students(runs))
    # runs that select on a validation split are judged on it every epoch (the test split only at the end)
    split = "val" if all(r.get("selected_on") == "val" for r in runs) else "test"
    # a segmentation is judged by mIoU (report.results.score); it has no confusion matrix or calibration figure
    dense = any(is_segment(r.summary) for r in runs)
    metric, what = ("miou", "mIoU") if dense else ("acc", "accuracy")
    jobs = [  # (name, needs student runs, draw(path) -> path | [paths] | None)
        ("accuracy_curves", False, lambda p: plot_curves(runs, f"{split}_{metric}", f"{split} {what} (%)",
                                                         f"{split.capitalize()} {what} per epoch", p)),
        ("loss_curves", False, lambda p: plot_curves(runs, f"{split}_loss", f"{split} loss (cross-entropy)",
                                                     f"{split.capitalize()} loss per epoch", p)),
        ("accuracy_vs_params", True, lambda p: plot_accuracy_vs_params(runs, p)),
        ("kd_gain", True, lambda p: plot_kd_gain(runs, p)),
        ("seconds_per_epoch", False, lambda p: plot_seconds_per_epoch(runs, p)),
        ("confusion_matrix_best_student", True, lambda p: plot_best_confusion(runs, p)),
        ("reliability_diagram", True, lambda p: plot_reliability(runs, p)),
        ("qat_accuracy_vs_bytes", False, lambda p: plot_qat(*qat_points(
            [(r.summary, r.dir) for r in runs + qat]), p) if qat else None),
        ("deploy", False, lambda p: plot_deploy(runs, out("deploy_accuracy_vs_latency"),
                                                out("deploy_accuracy_vs_bytes"))),
    ]
    failures = 0
    for name, needs_students, draw in jobs:
        if dense and name in ("confusion_matrix_best_student", "reliability_diagram"):
            print(f"skipped {prefix}{name}.png: a segmentation's per-class IoU is in evaluation.json, its pictures "
                  f"in plots/{SEGMENTATION_EXAMPLES} (drawn by the sweep)")
            continue
        if needs_students and not have_students:
            print(f"skipped {prefix}{name}.png: no finished student run")
            continue
        try:
            written = draw(out(name))
        except Exception as e:  # one broken figure must not cost the others
            traceback.print_exc()
            print(f"error: {prefix}{name}: {type(e).__name__}: {e}", file=sys.stderr)
            failures += 1
            continue
        if name == "qat_accuracy_vs_bytes" and not written:
            continue  # no quantized student in this sweep
        if name == "deploy" and not written:
            print(f"skipped deploy plots: no {DEPLOY_JSON} with a measured variant "
                  "(run the sweep with --deploy=True)")
        for path in (written if isinstance(written, list) else [written] if written else []):
            print(f"wrote {path}")
    return failures


def plot_scale(out_dir: str) -> int:
    """A data-scaling sweep (--sweep_train_samples): each size folder's own figures, then
    <out_dir>/plots/kd_gain_vs_data.png across the sizes; returns how many figures failed."""
    from report.plots.scale import plot_kd_gain_vs_data
    from report.scale import scale_rows, size_points

    points = size_points(out_dir)
    failures = sum(main(os.path.join(out_dir, folder)) for _, folder, _ in points)
    rows = scale_rows(out_dir)
    if not rows:
        print("skipped kd_gain_vs_data.png: no size with both a CE control and a distilled student")
        return failures
    hardware = sorted({r.get("hardware") for _, _, runs in points for r in runs if r.get("hardware")})
    note = f"{', '.join(f'{n:,}' for n, _, _ in points)} labeled images | trained on {'; '.join(hardware) or '?'}"
    print(f"wrote {plot_kd_gain_vs_data(rows, os.path.join(out_dir, PLOTS_DIR, 'kd_gain_vs_data.png'), note)}")
    return failures


def main(out_dir: str) -> int:
    from report.scale import size_points

    if size_points(out_dir):
        return plot_scale(out_dir)
    runs, failed = load_runs(out_dir)
    if failed:
        print(f"left out {len(failed)} failed run(s): {', '.join(failed)}")
    plots_dir = os.path.join(out_dir, PLOTS_DIR)
    datasets = by_dataset(runs)
    failures = 0
    for dataset, ds_runs in datasets.items():
        failures += plot_dataset(ds_runs, plots_dir, f"{dataset}_" if len(datasets) > 1 else "")
    return 1 if failures else 0


@cli_entry
def cli(argv=None):
    cfg = make_config(sys.argv[1:] if argv is None else argv)
    sys.exit(main(cfg.out_dir))


if __name__ == "__main__":
    cli()
