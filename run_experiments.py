"""The sweep: teacher once, then students over blocks x precision x method x seed, plus a CE control per depth.

    python run_experiments.py --preset=demo
    python run_experiments.py --preset=smoke --seeds=2
    python run_experiments.py --sweep_blocks=[4,8] --sweep_precisions=[fp32,fp8] --deploy=True

One frozen config per grid point; nothing global is mutated. The teacher trains first; then the
students that share a seed and their batches train together (train.train_runs: each batch made once,
the teacher's outputs for it computed once, every student stepping on it), one group after another
or `--workers=N` groups at once in their own processes, or as Ray tasks across GPUs and nodes
(`--launcher=ray`, runtime/ray_sweep.py). Rerunning the same command skips complete runs
(files untouched), continues partial ones from checkpoint.pt and runs the rest. A failed run is
recorded (summary.json status "failed") and the sweep goes on; the exit code is 1 at the end if any
run failed. A run another process holds (run_dir/.lock) is skipped and named; a run whose checkpoint.pt
is unreadable starts over. Aggregates: out_dir/results.csv and results.md (rewritten only when they
change, so a finished sweep reruns in a read-only out_dir). The parts: sweep/plan.py (the grid), sweep/launch.py
(the runs), sweep/steps.py (PTQ, deploy, the best student's evaluation), sweep/report.py (the tables, via report/).
"""
import dataclasses
import sys

from config import Config, make_config
from runtime import torchrun
from runtime.run_dir import is_complete, run_dir_of
from sweep.launch import check_writable, run_grid, run_one
from sweep.plan import grid, size_configs, student_config, teacher_config  # noqa: F401 (student_config: re-exported)
from sweep.report import scale_report, write_report
from sweep.steps import after_runs
from utils.errors import UserError, cli_entry


def scale_main(base: Config) -> int:
    """The data-scaling sweep: the teacher once (unless --teacher_checkpoint names one), then each size's sweep
    (resumable like any sweep), then <out_dir>/scale.md and scale.csv across the sizes."""
    if base.sweep_train_epochs and len(base.sweep_train_epochs) != len(base.sweep_train_samples):
        raise UserError(f"--sweep_train_epochs={list(base.sweep_train_epochs)}: one epoch count per size of "
                        f"--sweep_train_samples={list(base.sweep_train_samples)}, or () for --epochs at every size")
    if len(set(base.sweep_train_samples)) < len(base.sweep_train_samples):
        raise UserError(f"--sweep_train_samples={list(base.sweep_train_samples)}: a size named twice (one folder "
                        f"per size)")
    teacher = base.teacher_checkpoint
    if not teacher:  # on the whole training split unless --teacher_train_samples says otherwise
        cfg = teacher_config(dataclasses.replace(base, max_train_samples=0))
        if not is_complete(run_dir_of(cfg)) and run_one(cfg) != "done":
            raise UserError(f"{run_dir_of(cfg)}: the teacher did not finish; the sizes' sweeps need it")
        teacher = run_dir_of(cfg)
    codes = []
    for cfg in size_configs(base):
        print(f"== {cfg.max_train_samples or 'all'} labeled images, {cfg.epochs} epochs: {cfg.out_dir}")
        codes.append(main(dataclasses.replace(cfg, teacher_checkpoint=teacher)))
    scale_report(base.out_dir)
    return max(codes)


def main(base: Config) -> int:
    if base.sweep_train_samples:
        return scale_main(base)
    if torchrun.launched_by_torchrun():
        raise UserError("run_experiments.py runs under python, not torchrun: torchrun trains one run "
                        "(train.py); a sweep spreads over GPUs and nodes with --launcher=ray")
    if not base.sweep_blocks and not base.student_arch:  # (a timm student has no depth: it ignores sweep_blocks)
        raise UserError("--sweep_blocks=(): no student depth to sweep; pass one or more, e.g. --sweep_blocks=[4,6]")
    runs = grid(base)
    check_writable(base, runs)
    failed, skipped, stopped = run_grid(base, runs)
    unsaved = after_runs(base, runs)
    write_report(base, runs, unsaved)
    if skipped:
        print(f"{len(skipped)} run(s) skipped, in use by another process: {', '.join(skipped)}; rerun the sweep "
              f"when they finish to see them in the table", file=sys.stderr)
    if unsaved:
        raise UserError(unsaved[0] + (f" (and {len(unsaved) - 1} more like it)" if len(unsaved) > 1 else ""))
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (see their summary.json)", file=sys.stderr)
    return 1 if failed or stopped else 0


@cli_entry
def cli(argv=None):
    sys.exit(main(make_config(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    cli()
