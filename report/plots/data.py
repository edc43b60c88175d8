"""What the plots read: a sweep's out_dir, through its run files only (no torch, no training code).

Each run dir holds summary.json (the run facts; status "failed" = skipped), history.json (one dict
per epoch) and, when later steps ran, evaluation.json (evaluate.py) and deploy.json (deploy step).
"""
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

from report.results import ce_controls, is_segment, kd_gain, score, student_key, student_label, student_order
from utils.errors import UserError
from utils.names import CONTROL, grid_order, series_of
from utils.precision_table import FP32, precision_label as summaries_label
from utils.run_files import DEPLOY_JSON, EVALUATION, GENERATION, HISTORY, SUMMARY, load_history, load_summary


def read_json_or_none(path: str):
    """The parsed file, or None when it is missing or torn (a plot never stops on one bad file)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"warning: {path}: unreadable ({type(e).__name__}), left out of the plots")
        return None


@dataclass
class Run:
    name: str
    dir: str
    summary: dict
    history: list
    evaluation: Optional[dict] = None
    deploy: Optional[dict] = None

    def get(self, key, default=None):
        value = self.summary.get(key)
        return default if value is None else value

    @property
    def is_teacher(self) -> bool:
        return self.summary.get("role") == "teacher"

    @property
    def method(self) -> str:
        """The method, with its transfer set where it had one ("kd+20000u") or its born-again generation ("kd+g1"):
        a series of its own."""
        return series_of(self.get("method", CONTROL), self.get("unlabeled_images", 0), self.get(GENERATION, 0))

    @property
    def precision(self) -> str:
        return self.get("precision", FP32)

    @property
    def blocks(self) -> int:
        return int(self.get("blocks", 0))

    @property
    def model(self):
        """Which student: its depth (ResidualCNN), or its arch for a timm student (report.results.student_key)."""
        key = student_key(self.summary)
        return key if key is not None else self.blocks

    @property
    def acc(self) -> Optional[float]:
        """Test accuracy, or a segmentation's test mIoU, at the selected epoch (report.results.score)."""
        return score(self.summary)

    @property
    def label(self) -> str:
        """res4 / timm-mobilenetv3_small_050 / teacher seed12: the model, as the legends name it."""
        return f"teacher {self.get('arch', self.get('teacher_arch', ''))}".strip() if self.is_teacher \
            else student_label(self.model)


def _read_run(run_dir: str):
    """The Run of a complete run directory, "failed" for one whose summary says otherwise, else None."""
    if not os.path.isdir(run_dir):
        return None
    summary, why = load_summary(run_dir)
    if summary is None:
        if why:
            print(f"warning: {os.path.join(run_dir, SUMMARY)}: {why}, left out of the plots")
        return None
    if summary.get("status") != "complete":
        return "failed"
    if why:
        print(f"{os.path.join(run_dir, SUMMARY)}: {why}; left out of the plots", file=sys.stderr)
        return None
    history, why = load_history(run_dir)
    if why:
        print(f"warning: {os.path.join(run_dir, HISTORY)}: {why}, left out of the plots")
    return Run(name=summary.get("run_name", os.path.basename(run_dir)), dir=run_dir, summary=summary,
               history=history or [],
               evaluation=read_json_or_none(os.path.join(run_dir, EVALUATION)),
               deploy=read_json_or_none(os.path.join(run_dir, DEPLOY_JSON)))


def load_runs(out_dir: str) -> tuple:
    """(complete runs sorted teacher-first then by depth/method/precision/seed, names of failed runs).
    A teacher run outside out_dir (a released one its students name in teacher_run) joins them.

    Raises UserError when out_dir is missing or holds no run with a summary.json."""
    if not os.path.isdir(out_dir):
        raise UserError(f"--out_dir={out_dir}: no such directory; run run_experiments.py first")
    runs, failed = [], []
    for name in sorted(os.listdir(out_dir)):
        run = _read_run(os.path.join(out_dir, name))
        if run == "failed":
            failed.append(name)
        elif run is not None:
            runs.append(run)
    if runs and not any(r.is_teacher for r in runs):  # a released teacher (teachers/) lives outside out_dir
        teacher = next((t for t in {r.get("teacher_run") for r in runs} if isinstance(t, str) and os.path.isdir(t)), None)
        run = _read_run(teacher) if teacher else None
        if isinstance(run, Run) and run.is_teacher:
            runs.append(run)
    if not runs:
        what = f"only failed runs ({', '.join(failed)})" if failed else "no run with a summary.json"
        raise UserError(f"--out_dir={out_dir}: {what}; run run_experiments.py first")
    runs.sort(key=lambda r: (not r.is_teacher, student_order(r.model), *grid_order(0, r.method, r.precision),
                             r.get("seed", 0)))
    return runs, failed


def by_dataset(runs: list) -> dict:
    groups = defaultdict(list)
    for r in runs:
        groups[r.get("dataset", "unknown dataset")].append(r)
    return dict(groups)


def score_label(runs: list) -> str:
    """What Run.acc is for these runs: test accuracy, or a segmentation's test mIoU."""
    return "test mIoU" if any(is_segment(r.summary) for r in runs) else "test accuracy"


def students(runs: list) -> list:
    return [r for r in runs if not r.is_teacher]


def teacher_of(runs: list) -> Optional[Run]:
    return next((r for r in runs if r.is_teacher), None)


def group_key(r: Run) -> tuple:
    """A grid point of the sweep (every seed of it): (student, method, precision); the student is its depth,
    or a timm student's arch."""
    return r.model, r.method, r.precision


def group_students(runs: list) -> dict:
    """{(blocks, method, precision): [runs over seeds]} in sweep order."""
    groups = defaultdict(list)
    for r in students(runs):
        groups[group_key(r)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: (student_order(kv[0][0]), grid_order(0, *kv[0][1:]))))


def kd_gains(runs: list) -> dict:
    """{(blocks, method, precision): [gain per seed]}: a distilled student's best accuracy minus the
    same-depth, same-seed CE control's (as report.results computes it for results.csv)."""
    ce = ce_controls([r.summary for r in runs])
    gains = defaultdict(list)
    for r in students(runs):
        gain = kd_gain(r.summary, ce)
        if gain is not None:
            gains[group_key(r)].append(gain)
    return dict(gains)


def precision_label(runs: list, precision: str) -> str:
    """fp8 -> 'fp8 (simulated e4m3/e5m2)'; bf16 run in place of fp16 -> 'bf16 (in place of fp16)'."""
    return summaries_label([r.summary for r in runs], precision)


def context_line(runs: list) -> str:
    """'fashion-mnist (256 train / 128 test images) | trained on <hardware>' for footnotes."""
    datasets = sorted({r.get("dataset", "?") for r in runs})
    sizes = sorted({(r.get("train_images"), r.get("test_images")) for r in runs
                    if r.get("train_images") is not None})
    size = f" ({sizes[0][0]:,} train / {sizes[0][1]:,} test images)" if len(sizes) == 1 else ""
    hardware = sorted({r.get("hardware") for r in runs if r.get("hardware")})
    hw = "; ".join(hardware) if hardware else "hardware not recorded"
    return f"dataset: {', '.join(datasets)}{size} | trained on {hw}"


def seeds_note(runs: list) -> str:
    n = max((len(g) for g in group_students(runs).values()), default=1)
    return f"mean ± std over {n} seeds" if n > 1 else "1 seed per point (no error bars)"
