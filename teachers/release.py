"""Released teachers: check a teacher run against its summary, and release one into teachers/.

    python teachers/release.py --check teachers/fashion-mnist_teacher_resnet20
    python teachers/release.py --compare checkpoints/teachers/fashion-mnist_teacher_resnet32   # after make teacher
    python teachers/release.py --release checkpoints/teachers/fashion-mnist_teacher_resnet20
    python teachers/release.py --ensemble teachers/<run>,teachers/<run>_s1   # make teacher: the two members

--check measures the run's test accuracy (a segmentation teacher's test mIoU) again, on its whole test split,
with the weights students load and in the precision it was measured in, and compares it with the number its
summary.json records, after checking every file whose sha256 it records.
--compare does that for a remade teacher and sets it beside the released one of the same name. --ensemble
checks each member and measures the teacher students learn from when --teacher_checkpoint names them all: the
mean of their logits (runtime/teacher.TeacherEnsemble). --release
copies a finished teacher run's small files into teachers/<run name>/ (no checkpoint.pt: students need the
weights, not the optimizer state; not the last epoch's model.safetensors either where the files would pass
MAX_BYTES with it) and adds a "release" block to its summary.json: how it is remade, the accuracy (or mIoU)
measured at release, the bytes, the sha256 of its weights. The size is checked before anything is
copied, and the files are copied into a temporary folder beside it that then takes its place: a refused or
interrupted release leaves the previous one as it was.
"""
import argparse
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.inference import evaluate_logits, segment_scores  # noqa: E402
from runtime.run_dir import load_run, measure_test_logits, run_autocast  # noqa: E402
from utils.atomic import atomic_copy_file, read_json_object  # noqa: E402
from utils.errors import UserError, cli_entry  # noqa: E402
from utils.run_files import (BEST_WEIGHTS, CONFIG, DIGEST_KEY, DIGESTED_FILES, FINAL_WEIGHTS, HISTORY,  # noqa: E402
                             RELEASE_KEY, SUMMARY, TRAINING_SUMMARY, check_digest, file_digests, is_segment,
                             read_summary, score, write_summary)

HERE = Path(__file__).resolve().parent
RELEASED_FILES = (BEST_WEIGHTS, FINAL_WEIGHTS, CONFIG, SUMMARY, HISTORY, TRAINING_SUMMARY)
MAX_BYTES = 5 * 2 ** 20  # a released teacher stays small: it lives in the repository
REMADE_BY = "make teacher (python train.py --preset=teacher --resume=True)"
SEG_REMADE_BY = "make seg-teacher (python train.py --preset=seg-teacher --resume=True)"  # a segmentation teacher's
TOLERANCE = 0.15  # points: the same weights on another CPU's kernels may flip an image or two of 10,000


def measured_accuracy(run_dir, measured: tuple = None) -> tuple:
    """(test accuracy %, test images) of the run's weights on its whole test split: of measure_test_logits' `measured`
    when given, else measured now. A segmentation teacher's test mIoU (%) and test scenes instead, scored batch by
    batch (its logit maps are never all held)."""
    if measured is None and is_segment(read_summary(run_dir) or {}):
        cfg, model, ds, _ = load_run(str(run_dir))
        return segment_scores(model, ds.test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last,
                              ds.num_classes, run_autocast(cfg))["miou"], len(ds.test)
    logits, labels, _ = measured or measure_test_logits(run_dir)
    return evaluate_logits(logits, labels)[1], len(labels)


def what(summary: dict) -> str:
    """What measured_accuracy measures for this run, for its lines."""
    return "test mIoU" if is_segment(summary) else "test accuracy"


def summary_of(run_dir) -> dict:
    s = read_summary(run_dir)
    if not s or s.get("status") != "complete":
        raise UserError(f"{run_dir}: not a finished run (no complete {SUMMARY})")
    return s


def check_digests(run_dir, summary) -> None:
    """Every weights file whose sha256 the summary records is still that file: one line naming it otherwise."""
    for name in DIGESTED_FILES:
        if os.path.isfile(os.path.join(run_dir, name)):
            check_digest(os.path.join(run_dir, name), summary)


def teacher_summary(run_dir) -> dict:
    """The summary of a finished teacher run (config role teacher, summary status complete): one line otherwise."""
    s = summary_of(run_dir)
    roles = (s.get("role"), (read_json_object(os.path.join(run_dir, CONFIG)) or {}).get("role"))
    if roles != ("teacher", "teacher"):
        what = (f"a student run ({s.get('arch')}, {s.get('method')})" if "student" in roles
                else f"not a teacher run (role {roles[0]!r} in its summary, {roles[1]!r} in its {CONFIG})")
        raise UserError(f"{run_dir}: {what}; only a teacher run (config role teacher, summary status complete) "
                        f"is released")
    return s


def destination(run_dir) -> Path:
    """teachers/<run name>/ of a run directory, which must be a folder directly in teachers/ and no released
    teacher itself: one line otherwise."""
    src, home = Path(run_dir).resolve(), HERE.resolve()
    if src == home or home in src.parents:
        raise UserError(f"--release={run_dir}: already a released teacher (in {HERE}); release the run it was "
                        f"trained as (its summary's release.trained_at)")
    dest = HERE / src.name
    if src.name in ("", ".", "..") or dest.resolve().parent != home:
        raise UserError(f"--release={run_dir}: would be released to {dest.resolve()}, not a folder in {HERE}; "
                        f"pass the run directory itself")
    return dest


def check(run_dir, measured: tuple = None) -> float:
    """The run's test accuracy (or mIoU) now (of measure_test_logits' `measured` when given) against its summary's:
    one line."""
    s = summary_of(run_dir)
    check_digests(run_dir, s)
    recorded = score(s)
    acc, n = measured_accuracy(run_dir, measured)
    verdict = "ok" if abs(acc - recorded) <= TOLERANCE else "MISMATCH"
    print(f"{run_dir}: {what(s)} {acc:.2f}% on {n:,} test images now, {recorded:.2f}% in its summary: {verdict}")
    if verdict != "ok":
        raise UserError(f"{run_dir}: measured {what(s)} {acc:.2f}% but its summary says {recorded:.2f}%")
    return acc


def compare(run_dir) -> None:
    """A remade teacher beside the released one of the same name."""
    acc = check(run_dir)
    released = HERE / Path(run_dir).resolve().name
    theirs = read_summary(str(released))
    if theirs is None:
        print(f"no released teacher {released} to compare with")
        return
    s = summary_of(run_dir)
    print(f"remade {acc:.2f}% ({s['hardware']}, {s['train_seconds'] / 60:.1f} min) vs released "
          f"{score(theirs):.2f}% ({theirs['hardware']}, {theirs['train_seconds'] / 60:.1f} min): "
          f"{acc - score(theirs):+.2f} points of {what(s)}")


def ensemble(spec: str) -> float:
    """Each member checked as --check does, then the ensemble the students would learn from (the mean of the
    members' logits, runtime/teacher.TeacherEnsemble) measured on the whole test split."""
    members = [m for m in spec.split(",") if m]
    if len(members) < 2 or len(set(members)) < len(members):
        raise UserError(f"--ensemble={spec}: name two or more different teacher runs, joined by commas")
    total, labels, datasets = None, None, set()
    for run_dir in members:
        if is_segment(teacher_summary(run_dir)):
            raise UserError(f"--ensemble: {run_dir} is a segmentation teacher; an ensemble is measured for "
                            f"classifiers only (--check measures each member's mIoU)")
        measured = measure_test_logits(run_dir)  # once: checked against the summary, then averaged
        check(run_dir, measured)
        logits, labels, dataset = measured
        datasets.add((dataset, len(labels)))
        total = logits if total is None else total + logits
    if len(datasets) > 1:
        raise UserError(f"--ensemble={spec}: the members were tested on different data ({sorted(datasets)})")
    acc = evaluate_logits(total / len(members), labels)[1]
    print(f"ensemble of {len(members)} ({', '.join(Path(m).name for m in members)}): {acc:.2f}% on "
          f"{len(labels):,} test images")
    return acc


def _swap_in(tmp: Path, dest: Path) -> None:
    """The folder tmp becomes dest; a previous dest is moved aside first and removed only once tmp is in place."""
    old = tmp.with_name(tmp.name.removesuffix(".tmp") + ".old") if dest.exists() else None
    if old is not None:
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old)


def release(run_dir, note: str = "", remade_by: str = "") -> Path:
    """Release a finished teacher run into teachers/<run name>/; remade_by: the command that trains it again
    (default: make teacher's, or make seg-teacher's for a segmentation teacher)."""
    dest = destination(run_dir)
    src = Path(run_dir).resolve()
    s = teacher_summary(src)
    check_digests(src, s)
    files = [name for name in RELEASED_FILES if (src / name).is_file()]
    size = sum((src / name).stat().st_size for name in files)
    if size > MAX_BYTES and FINAL_WEIGHTS in files:  # students load the selected epoch's weights: the last may stay
        files.remove(FINAL_WEIGHTS)
        size -= (src / FINAL_WEIGHTS).stat().st_size
        note = (note + "; " if note else "") + f"{FINAL_WEIGHTS} left out (over {MAX_BYTES:,} bytes with it)"
    if size > MAX_BYTES:  # before anything is copied
        raise UserError(f"{dest}: {size:,} bytes, over the {MAX_BYTES:,} a released teacher may take")
    acc, n = measured_accuracy(src)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=HERE))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a folder like any other, not mkdtemp's private 0700
        for name in files:
            if name != SUMMARY:  # written below, with the release block
                atomic_copy_file(src / name, tmp / name)
        s[RELEASE_KEY] = {"remade_by": remade_by or (SEG_REMADE_BY if is_segment(s) else REMADE_BY),
                          "trained_at": str(src.relative_to(ROOT) if src.is_relative_to(ROOT) else src),
                          "released": str(datetime.date.today()),
                          f"test_{'miou' if is_segment(s) else 'acc'}_at_release": acc, "test_images": n,
                          "bytes": size, DIGEST_KEY: file_digests(tmp, DIGESTED_FILES),
                          "machine": s.get("hardware"), "wall_seconds": s.get("train_seconds"), "note": note}
        write_summary(tmp, s)
        _swap_in(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"released {dest}: {what(s)} {acc:.2f}% on {n:,} test images, {size:,} bytes")
    return dest


@cli_entry
def cli(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", metavar="RUN_DIR")
    g.add_argument("--compare", metavar="RUN_DIR")
    g.add_argument("--release", metavar="RUN_DIR")
    g.add_argument("--ensemble", metavar="RUN_DIR,RUN_DIR", help="each member checked, then their mean logits")
    p.add_argument("--note", default="", help="with --release: what the summary alone does not say")
    p.add_argument("--remade_by", default="", help="with --release: the command that trains it again (default: "
                   "make teacher's, make seg-teacher's for a segmentation teacher)")
    a = p.parse_args(argv)
    if a.check:
        check(a.check)
    elif a.compare:
        compare(a.compare)
    elif a.ensemble:
        ensemble(a.ensemble)
    else:
        release(a.release, a.note, a.remade_by)


if __name__ == "__main__":
    cli()
