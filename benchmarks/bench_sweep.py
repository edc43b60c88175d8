"""A whole sweep: the demo grid the original way vs the project's sweep vs the students' compute floors.

    python benchmarks/bench_sweep.py                        # the demo preset's grid, 1 repeat
    python benchmarks/bench_sweep.py --preset=demo --repeats=2 --json=benchmarks/results/bench_sweep_cpu.json

In one process, on the same images, the same trained teacher (trained once, untimed) and the demo's
students (every depth, CE control and distilled, every seed), for the preset's epochs:
  (a) original: one run after another, each the original repo's loop (benchmarks/reference_loop.py):
      per-item PIL decode every epoch, the teacher's forward on every batch of every distilled student,
      .item() per batch, NCHW; the CE controls the same loop without a teacher;
  (b) project: `run_experiments.main` on the grid (the teacher run already complete, so skipped), cold
      data and teacher-logit caches: students of a seed trained together on shared batches, teacher
      logits cached once per image and view, evaluation, run files, results tables, all timed;
  (c) floors: for every student, its forward + backward + optimizer step alone on random tensors of the
      same shape and count (channels_last), summed.
The comparison uses test-split selection (val_fraction=0, as the original did), so both loops evaluate
the same test images after every epoch. Images per second = training images seen / wall seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import run_experiments  # noqa: E402
import train  # noqa: E402
from benchmarks import bench_data  # noqa: E402
from benchmarks.bench_train import machine_info, student_floor  # noqa: E402
from benchmarks.reference_loop import pil_mean_std, run_reference  # noqa: E402
from config import default_run_name, make_config  # noqa: E402
from models.cnn_model import build_student  # noqa: E402
from models.teacher_arch import build_teacher  # noqa: E402
from utils.atomic import atomic_write_json  # noqa: E402
from utils.checkpoint import load_weights_into  # noqa: E402
from utils.names import CONTROL  # noqa: E402
from utils.run_files import BEST_WEIGHTS, STAGE_SECONDS, STAGES, read_summary  # noqa: E402

TARGET_OVER_ORIGINAL = 2.0  # issue 13: the sweep >= 2x the grid trained the original way, on this CPU
TARGET_OVER_FLOORS = 1.10  # ... and within 10% of the sum of its students' eager floors


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="demo", help="the config preset whose grid is timed")
    p.add_argument("--override", action="append", default=[], help="extra --field=value for the grid")
    p.add_argument("--repeats", type=int, default=1, help="runs of each path, interleaved; medians")
    p.add_argument("--paths", default="original,project,floors")
    p.add_argument("--work_dir", default="", help="scratch folder (default: a temp dir, removed afterwards)")
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def grid_config(args, work: Path):
    """The preset's grid with test selection and a scratch out_dir (data stays in the default data_dir)."""
    argv = [f"--preset={args.preset}", *args.override, "--val_fraction=0", f"--out_dir={work / 'sweep'}"]
    return make_config(argv)


def prepare_teacher(base, work: Path) -> Path:
    """Train the grid's teacher once (untimed); every path uses these weights."""
    tcfg = dataclasses.replace(run_experiments.teacher_config(base), out_dir=str(work / "teacher"))
    train.main(tcfg)
    return work / "teacher" / default_run_name(tcfg)


def png_trees(base, students: list, work: Path) -> dict:
    """{seed: BenchData}: each seed's training subset written as PNG files for the original loop."""
    out = {}
    for seed in sorted({c.seed for c in students}):
        out[seed] = bench_data.make_fashion_pngs(work / f"png_s{seed}", base.max_train_samples or 60000,
                                                 base.max_test_samples or 10000, 28, seed)
    return out


def run_original(base, students: list, trees: dict, teacher_dir: Path) -> dict:
    """(a): every student of the grid trained one after another the original way."""
    t0, seen, accs = time.perf_counter(), 0, {}
    for cfg in students:
        data = trees[cfg.seed]
        mean, std = pil_mean_std(data.train_root, data.mode)
        torch.manual_seed(cfg.seed)
        student = build_student(cfg, data.channels, len(data.classes))
        teacher = None
        if cfg.method != CONTROL:
            teacher = build_teacher(dataclasses.replace(base, role="teacher", unlabeled_samples=0), data.channels, len(data.classes))
            load_weights_into(teacher, teacher_dir / BEST_WEIGHTS, "the sweep's teacher")
        r = run_reference(student, teacher, data.train_root, data.test_root, size=28, mean=mean, std=std,
                          mode=data.mode, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                          temperature=cfg.temperature, alpha=cfg.alpha, device="cpu", workers=0, seed=cfg.seed,
                          ckpt_path=teacher_dir.parent / "reference_best.pt", kd_weight=cfg.kd_weight)
        seen += r["train_images_seen"]
        accs[default_run_name(cfg)] = r["final_test_acc"]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "train_images_seen": seen, "images_per_second": seen / seconds,
            "final_test_acc": accs}


def run_project(base, teacher_dir: Path, work: Path) -> dict:
    """(b): the project's sweep of the same grid, cold caches, the teacher run present and complete."""
    out = Path(base.out_dir)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(teacher_dir, out / teacher_dir.name, ignore=shutil.ignore_patterns("logits_cache"))
    shutil.rmtree(Path(base.data_dir) / "cache", ignore_errors=True)
    t0 = time.perf_counter()
    code = run_experiments.main(base)
    seconds = time.perf_counter() - t0
    rows = [read_summary(out / default_run_name(c)) for c in run_experiments.grid(base)[1:]]
    seen = sum(r["epochs_run"] * (r["train_images"] // r["batch_size"]) * r["batch_size"] for r in rows)
    stages = {k: sum((r.get(STAGE_SECONDS) or {}).get(k, 0.0) for r in rows) for k in ("train", *STAGES)}
    stages["other"] = seconds - sum(stages.values())  # data and teacher-logit caches, auto's timing, tables, plots
    return {"seconds": seconds, "exit_code": code, "train_images_seen": seen, "images_per_second": seen / seconds,
            "train_loop_seconds": sum(r["train_seconds"] for r in rows), "stage_seconds": stages,
            "final_test_acc": {r["run_name"]: r["final_test_acc"] for r in rows}}


def run_floors(students: list) -> dict:
    """(c): each student's eager step alone on random tensors, as many steps as the sweep takes, summed."""
    total, seen = 0.0, 0
    for cfg in students:
        steps = cfg.epochs * (cfg.max_train_samples // cfg.batch_size)
        r = student_floor(cfg, 1, 10, 28, steps, torch.device("cpu"))
        total += r["seconds"]
        seen += r["train_images_seen"]
    return {"seconds": total, "train_images_seen": seen, "images_per_second": seen / total}


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        base = grid_config(args, work)
        students = run_experiments.grid(base)[1:]
        machine = machine_info(torch.device("cpu"))
        print(f"machine: {machine['hardware']}; {len(students)} students, {base.epochs} epochs, "
              f"{base.max_train_samples} train images each", flush=True)
        teacher_dir = prepare_teacher(base, work)
        trees = png_trees(base, students, work)
        wanted = [p.strip() for p in args.paths.split(",")]
        runs = {p: [] for p in wanted}
        for rep in range(args.repeats):
            if "original" in wanted:
                runs["original"].append(run_original(base, students, trees, teacher_dir))
                print(f"  (a) original, repeat {rep + 1}: {runs['original'][-1]['seconds']:.1f} s", flush=True)
            if "project" in wanted:
                runs["project"].append(run_project(base, teacher_dir, work))
                done = runs["project"][-1]
                print(f"  (b) project sweep, repeat {rep + 1}: {done['seconds']:.1f} s ("
                      + ", ".join(f"{k} {v:.1f} s" for k, v in done["stage_seconds"].items()) + ")", flush=True)
            if "floors" in wanted:
                runs["floors"].append(run_floors(students))
                print(f"  (c) floors, repeat {rep + 1}: {runs['floors'][-1]['seconds']:.1f} s", flush=True)
        med = {p: statistics.median(r["seconds"] for r in rs) for p, rs in runs.items() if rs}
        ratios = {}
        if "original" in med and "project" in med:
            ratios["original_over_project"] = med["original"] / med["project"]
        if "floors" in med and "project" in med:
            ratios["project_over_floors"] = med["project"] / med["floors"]
        if "original" in med and "floors" in med:
            ratios["original_over_floors"] = med["original"] / med["floors"]  # the ceiling of (a)/(b)
        result = {"benchmark": "bench_sweep", "machine": machine, "preset": args.preset, "overrides": args.override,
                  "students": len(students), "epochs": base.epochs, "train_images": base.max_train_samples,
                  "median_seconds": med, "ratios": ratios, "runs": runs,
                  "targets": {"original_over_project": TARGET_OVER_ORIGINAL, "project_over_floors": TARGET_OVER_FLOORS}}
        for k, v in ratios.items():
            print(f"  {k}: {v:.2f}")
        if args.json:
            atomic_write_json(args.json, result)
            print(f"wrote {args.json}")
        return result
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
