"""The data-scaling sweep's report (run_experiments.py --sweep_train_samples): per labeled size and student,
the CE control, each distilled method and their paired gain per seed, read from the size folders' run files
(<out_dir>/n<N>/, all/) -> <out_dir>/scale.md and scale.csv. The plot: report/plots/scale.py. Torch-free.
"""
import csv
import io
import os

from report.plots.data import group_students, load_runs, teacher_of
from report.results import control_precisions, fmt_gains, fmt_ms, quantized, student_label, student_order
from utils.atomic import atomic_update_text
from utils.errors import UserError
from utils.names import CONTROL
from utils.precision_table import FP32
from utils.run_files import SCALE_CSV, SCALE_MD, SIZE_FOLDER

CSV_COLUMNS = ["labeled_images", "folder", "student", "method", "precision", "seed", "ce_acc", "distilled_acc",
               "gain"]


def size_points(out_dir: str) -> list:
    """[(labeled images, folder, complete runs)] of the size folders under out_dir holding finished students,
    smallest first; the size is the students' own count of labeled training images (train_images)."""
    points = []
    for name in sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else ():
        path = os.path.join(out_dir, name)
        if not SIZE_FOLDER.fullmatch(name) or not os.path.isdir(path):
            continue
        try:
            runs, _ = load_runs(path)
        except UserError:  # nothing finished there yet
            continue
        runs = [r for r in runs if not quantized(r.summary)]  # QAT students have their own table (report/qat.py)
        sizes = [r.get("train_images") for r in runs if not r.is_teacher and isinstance(r.get("train_images"), int)]
        if sizes:
            points.append((max(sizes), name, runs))
    return sorted(points, key=lambda p: p[0])


def scale_rows(out_dir: str) -> list:
    """One row per size, student and distilled series: the seeds both the control and the student finished,
    with each one's accuracy and the paired gain (distilled - control, same seed, same data and order)."""
    rows = []
    for n, folder, runs in size_points(out_dir):
        groups = group_students(runs)
        teacher = teacher_of(runs)
        for (model, method, precision), members in groups.items():
            paired = next((groups[(model, CONTROL, p)] for p in control_precisions(precision)
                           if (model, CONTROL, p) in groups), [])
            control = {r.get("seed"): r.acc for r in paired}
            if method == CONTROL or not control:
                continue
            seeds = sorted(r.get("seed") for r in members if r.get("seed") in control)
            mine = {r.get("seed"): r.acc for r in members}
            rows.append({"labeled_images": n, "folder": folder, "student": student_label(model), "model": model,
                         "method": method, "precision": precision, "seeds": seeds,
                         CONTROL: [control[s] for s in seeds], "distilled": [mine[s] for s in seeds],
                         "gain": [mine[s] - control[s] for s in seeds],
                         # an ensemble (--teacher_checkpoint=a,b) has no run of its own: the accuracy its students
                         # measured and recorded
                         "teacher_acc": teacher.acc if teacher is not None else
                         next((r.get("teacher_acc") for r in members if r.get("teacher_acc") is not None), None)})
    return sorted(rows, key=lambda r: (r["labeled_images"], student_order(r["model"]), r["method"], r["precision"]))


def scale_markdown(rows: list) -> str:
    teacher = next((r["teacher_acc"] for r in rows if r["teacher_acc"] is not None), None)
    lines = ["## Distillation against labeled data (--sweep_train_samples)", "",
             f"Teacher: {teacher:.2f}% on the test split. " if teacher is not None else "",
             "Each cell: best test accuracy at the epoch selected on the validation hold-out, mean ± std over the "
             "seeds; the gain is paired per seed (the same images, order and schedule for both).", "",
             "| labeled images | student | method | CE control | distilled | gain, pts (per seed) |",
             "|---:|---|---|---:|---:|---|"]
    for r in rows:
        method = r["method"] + (f" ({r['precision']})" if r["precision"] != FP32 else "")
        lines.append(f"| {r['labeled_images']:,} | {r['student']} | {method} | {fmt_ms(r[CONTROL])} | "
                     f"{fmt_ms(r['distilled'])} | {fmt_gains(r['gain'])} |")
    return "\n".join(lines) + "\n"


def scale_csv(rows: list) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        for seed, ce, acc, gain in zip(r["seeds"], r[CONTROL], r["distilled"], r["gain"]):
            w.writerow([r["labeled_images"], r["folder"], r["student"], r["method"], r["precision"], seed,
                        f"{ce:.4f}", f"{acc:.4f}", f"{gain:.4f}"])
    return buf.getvalue()


def write_scale_report(out_dir: str) -> str:
    """<out_dir>/scale.md and scale.csv (each rewritten only when it changes); returns the markdown."""
    rows = scale_rows(out_dir)
    text = scale_markdown(rows)
    atomic_update_text(os.path.join(out_dir, SCALE_MD), text)
    atomic_update_text(os.path.join(out_dir, SCALE_CSV), scale_csv(rows))
    return text
