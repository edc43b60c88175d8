"""A segmentation sweep's picture, out_dir/plots/segmentation_examples.png: the first test scenes, their truth, then
the labels of the teacher, of the best distilled student (chosen on its validation mIoU, never on test) and of that
student's CE control (same depth, seed and precision). Drawn after the runs (sweep/steps.after_runs) from the
finished runs' weights, each checked against the digest its summary records (runtime/run_dir.load_run).
"""
import os

import torch

from data.dataset import pixel_labels
from config import student_name
from report.plots.segmentation import EXAMPLES, plot_segmentation_examples
from report.results import score, selection_acc
from runtime.inference import label_maps
from runtime.run_dir import is_complete, load_run, run_dir_of
from runtime.teacher import load_frozen_teacher
from utils.names import CONTROL
from utils.run_files import PLOTS_DIR, SEGMENTATION_EXAMPLES, read_summary


def best_pair(runs: list):
    """(best distilled student's config, its CE control's config) among the finished segmentation students, the
    student chosen on its selection score (validation mIoU where the runs have a hold-out); None without a pair."""
    done = {run_dir_of(c): c for c in runs if c.role == "student" and is_complete(run_dir_of(c))}
    summaries = {d: read_summary(d) for d in done}
    distilled = [(selection_acc(s), d) for d, s in summaries.items()
                 if s and done[d].method != CONTROL and score(s) is not None]
    for _, d in sorted(distilled, reverse=True):
        c = done[d]
        control = next((o for o in done.values() if o.method == CONTROL and (o.blocks, o.seed, o.precision) ==
                        (c.blocks, c.seed, c.precision)), None)
        if control is not None:
            return c, control
    return None


def draw_segmentation_examples(base, runs: list):
    """The picture's path, or None (and a printed line) when the sweep has no finished distilled student with its
    control."""
    pair = best_pair(runs)
    if pair is None:
        print(f"skipped {SEGMENTATION_EXAMPLES}: no finished distilled student with its CE control")
        return None
    student, control = pair
    _, model, ds, _ = load_run(run_dir_of(student))
    images, truth = ds.test.images[:EXAMPLES], ds.test.labels[:EXAMPLES]
    teacher, info = load_frozen_teacher(student, ds.in_channels, ds.num_classes, torch.device("cpu"), ds.image_size)
    models = {f"teacher {info['teacher_arch']}": teacher, f"{student_name(student)} {student.method}": model,
              f"{student_name(student)} {CONTROL} (control)": load_run(run_dir_of(control))[1]}
    columns = {"truth": pixel_labels(truth).numpy(),
               **{name: label_maps(m, images, ds.mean, ds.std).numpy() for name, m in models.items()}}
    s, c = read_summary(run_dir_of(student)), read_summary(run_dir_of(control))
    path = os.path.join(base.out_dir, PLOTS_DIR, SEGMENTATION_EXAMPLES)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plot_segmentation_examples(
        images.numpy(), columns, ds.classes, path,
        "Test scenes: teacher, the best distilled student (on validation mIoU) and its CE control",
        f"the first {len(images)} test scenes; test mIoU: teacher {s.get('teacher_miou') or float('nan'):.2f}%, "
        f"{student.method} {score(s):.2f}%, control {score(c):.2f}% (seed {student.seed}, {student.precision})")
    return path
