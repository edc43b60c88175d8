"""Released teachers: check a teacher run against its summary, and release one into teachers/.

    python teachers/release.py --check teachers/fashion-mnist_teacher_resnet20
    python teachers/release.py --compare checkpoints/teachers/fashion-mnist_teacher_resnet20   # after make teacher
    python teachers/release.py --release checkpoints/teachers/fashion-mnist_teacher_resnet20

--check measures the run's test accuracy again (its whole test split, the weights students load) and
compares it with the number its summary.json records. --compare does that for a remade teacher and
sets it beside the released one of the same name. --release copies a finished run's small files into
teachers/<run name>/ (no checkpoint.pt: students need the weights, not the optimizer state) and adds a
"release" block to its summary.json: how it is remade, the accuracy measured at release, the bytes.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.inference import evaluate_logits, predict  # noqa: E402
from runtime.run_dir import load_run  # noqa: E402
from utils.errors import UserError, cli_entry  # noqa: E402
from utils.run_files import HISTORY, RELEASE_KEY, SUMMARY, read_summary, write_summary  # noqa: E402

HERE = Path(__file__).resolve().parent
RELEASED_FILES = ("best_model.safetensors", "model.safetensors", "config.json", SUMMARY, HISTORY,
                  "training_summary.txt")
MAX_BYTES = 5 * 2 ** 20  # a released teacher stays small: it lives in the repository
REMADE_BY = "make teacher (python train.py --preset=teacher --resume=True)"
TOLERANCE = 0.15  # points: the same weights on another CPU's kernels may flip an image or two of 10,000


def measured_accuracy(run_dir) -> tuple:
    """(test accuracy %, test images) of the run's weights, measured now on its whole test split."""
    cfg, model, ds, _ = load_run(str(run_dir))
    logits = predict(model, ds.test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last)
    return evaluate_logits(logits, ds.test.labels)[1], len(ds.test)


def summary_of(run_dir) -> dict:
    s = read_summary(run_dir)
    if not s or s.get("status") != "complete":
        raise UserError(f"{run_dir}: not a finished run (no complete summary.json)")
    return s


def check(run_dir) -> float:
    recorded = summary_of(run_dir)["best_test_acc"]
    acc, n = measured_accuracy(run_dir)
    verdict = "ok" if abs(acc - recorded) <= TOLERANCE else "MISMATCH"
    print(f"{run_dir}: {acc:.2f}% on {n:,} test images now, {recorded:.2f}% in its summary: {verdict}")
    if verdict != "ok":
        raise UserError(f"{run_dir}: measured {acc:.2f}% but its summary says {recorded:.2f}%")
    return acc


def compare(run_dir) -> None:
    """A remade teacher beside the released one of the same name."""
    acc = check(run_dir)
    released = HERE / Path(run_dir).name
    theirs = read_summary(str(released))
    if theirs is None:
        print(f"no released teacher {released} to compare with")
        return
    s = summary_of(run_dir)
    print(f"remade {acc:.2f}% ({s['hardware']}, {s['train_seconds'] / 60:.1f} min) vs released "
          f"{theirs['best_test_acc']:.2f}% ({theirs['hardware']}, {theirs['train_seconds'] / 60:.1f} min): "
          f"{acc - theirs['best_test_acc']:+.2f} points")


def release(run_dir, note: str = "") -> Path:
    s = summary_of(run_dir)
    acc, n = measured_accuracy(run_dir)
    dest = HERE / Path(run_dir).name
    dest.mkdir(exist_ok=True)
    for name in RELEASED_FILES:
        if os.path.isfile(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), dest / name)
    size = sum((dest / n_).stat().st_size for n_ in RELEASED_FILES if (dest / n_).is_file())
    if size > MAX_BYTES:
        raise UserError(f"{dest}: {size:,} bytes, over the {MAX_BYTES:,} a released teacher may take")
    s[RELEASE_KEY] = {"remade_by": REMADE_BY, "trained_at": str(Path(run_dir)), "released": str(datetime.date.today()),
                    "test_acc_at_release": acc, "test_images": n, "bytes": size,
                    "machine": s.get("hardware"), "wall_seconds": s.get("train_seconds"), "note": note}
    write_summary(dest, s)
    print(f"released {dest}: {acc:.2f}% on {n:,} test images, {size:,} bytes")
    return dest


@cli_entry
def cli(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", metavar="RUN_DIR")
    g.add_argument("--compare", metavar="RUN_DIR")
    g.add_argument("--release", metavar="RUN_DIR")
    p.add_argument("--note", default="", help="with --release: what the summary alone does not say")
    a = p.parse_args(argv)
    if a.check:
        check(a.check)
    elif a.compare:
        compare(a.compare)
    else:
        release(a.release, a.note)


if __name__ == "__main__":
    cli()
