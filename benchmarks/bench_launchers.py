"""The Ray launcher's overhead over the local one: the same sweep, whole commands timed, interleaved.

    python benchmarks/bench_launchers.py                       # the smoke sweep, 2 repeats
    python benchmarks/bench_launchers.py --repeats=3 --json=benchmarks/results/bench_launchers_cpu.json

Each repeat runs `run_experiments.py --preset=smoke` from a fresh out_dir three ways: local (one
process, the students of a seed trained together, torch's default threads), ray (a local Ray started
for the sweep, one run per 1-CPU task: the default), and ray-group (one task per group with every CPU
of the machine: the local launcher's work shape, so the difference is Ray alone: starting it, shipping
tasks, worker start-up). Wall time covers the whole command, Ray's start and shutdown included.
Each measurement records the 1-minute load average before and after it: on a machine shared with
other jobs, torch's threads stall when a core is taken (a 2-thread sweep ran 5x slower beside one
busy process), so the minimum over repeats is reported next to the median.
Extra `--field=value` arguments go to every sweep.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.bench_train import machine_info  # noqa: E402
from utils.atomic import atomic_write_json  # noqa: E402
from utils.provenance import provenance  # noqa: E402
from utils.run_files import RESULTS_CSV  # noqa: E402

TIMING = ("train_seconds", "seconds_per_epoch", "images_per_second")


def variants() -> dict:
    cpus = os.cpu_count() or 1
    return {"local": [], "ray": ["--launcher=ray"],
            "ray-group": ["--launcher=ray", "--runs_per_task=0", f"--cpus_per_task={cpus}"]}


def run_sweep(args: list, out_dir: Path) -> dict:
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "run_experiments.py", *args, f"--out_dir={out_dir}"], cwd=ROOT,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(args)} exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    rows = list(csv.DictReader(open(out_dir / RESULTS_CSV)))
    return {"wall_seconds": wall, "load_before": load_before, "load_after": os.getloadavg()[0], "runs": len(rows),
            "train_seconds_sum": sum(float(r["train_seconds"]) for r in rows),
            "table": [{k: v for k, v in r.items() if k not in TIMING} for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default="", help="write the measurements here")
    opts, extra = ap.parse_known_args()
    sweep = ["--preset=smoke", *extra]
    runs = {name: [] for name in variants()}
    with tempfile.TemporaryDirectory(prefix="bench-launchers-") as work:
        for i in range(opts.repeats):
            for name, args in variants().items():
                m = run_sweep(sweep + args, Path(work) / f"{name}-{i}")
                runs[name].append(m)
                print(f"repeat {i + 1}/{opts.repeats} {name:9s}: {m['wall_seconds']:6.1f} s wall, "
                      f"{m['runs']} runs, {m['train_seconds_sum']:6.1f} s of training, load "
                      f"{m['load_before']:.2f} -> {m['load_after']:.2f}", flush=True)
    median = {n: statistics.median(m["wall_seconds"] for m in ms) for n, ms in runs.items()}
    best = {n: min(m["wall_seconds"] for m in ms) for n, ms in runs.items()}
    result = {
        "machine": machine_info(torch.device("cpu")),
        "sweep": sweep, "variants": {n: args for n, args in variants().items()}, "repeats": opts.repeats,
        "median_wall_seconds": median, "min_wall_seconds": best,
        "overhead_vs_local": {n: median[n] / median["local"] - 1.0 for n in median if n != "local"},
        "overhead_vs_local_min": {n: best[n] / best["local"] - 1.0 for n in best if n != "local"},
        # the same results table? (exact only where the runs used the same threads: ray-group here)
        "same_table_as_local": {n: all(m["table"] == runs["local"][0]["table"] for m in ms)
                                for n, ms in runs.items() if n != "local"},
        "runs": {n: [{k: v for k, v in m.items() if k != "table"} for m in ms] for n, ms in runs.items()},
        "provenance": provenance(),
    }
    for n, o in result["overhead_vs_local"].items():
        print(f"{n}: median {median[n]:.1f} s vs local {median['local']:.1f} s: {100 * o:+.1f}%; min "
              f"{best[n]:.1f} s vs {best['local']:.1f} s: {100 * result['overhead_vs_local_min'][n]:+.1f}% "
              f"(same table as local: {result['same_table_as_local'][n]})")
    if opts.json:
        atomic_write_json(opts.json, result)


if __name__ == "__main__":
    main()
