"""Tune a method's hyper-parameters on the validation split with Optuna.

    python tune.py --preset=reduced --method=kd --blocks=4 --trials=20 --params=temperature,kd_weight,alpha
    python run_experiments.py --preset=reduced --recipe=@checkpoints/reduced/tune_kd_res4.best.json

Every trial trains the student of the config (preset and overrides as for train.py) with the sampled
values, on tuning seeds (100, 101, ...) that no preset's table uses, and scores it by its best validation
accuracy (mean over the tuning seeds): the test split never chooses. TPE samples the values; the median
pruner stops a trial whose validation accuracy after an epoch is below the median of earlier trials' at
that epoch. The study lives in <out_dir>/<study>.db (SQLite), its trials' runs in <out_dir>/<study>/: a
killed tune continues where it stopped when run again, and two processes given the same command share
it and its count of trials. At the end the best values are printed and written to
<out_dir>/<study>.best.json, a recipe the sweep takes with --recipe=@<file>.

Flags of tune.py itself: --trials=N (complete or pruned trials the study should hold, those other
processes are running counted; default 20), --params=a,b,c (fields to tune, from SPACE below),
--tune_seeds=N (seeds per trial; default 1), --study=NAME (default tune_<method>_res<blocks>; a plain
folder name, checked as --run_name is).
"""
import dataclasses
import fcntl
import logging
import os
import sys
import tempfile
from contextlib import ExitStack, contextmanager

import train
from cli import PLAIN_NAME, check_field
from config import MAX_SEED, Config, make_config
from config_rules import check_out_dir_name
from utils.atomic import atomic_write_json
from utils.errors import HelpRequested, UserError, cannot_write, cli_entry, first_line
from utils.lock import RunLocked, run_lock
from utils.names import SEGMENT, hparam_methods, method_space
from utils.run_files import CONFIG

TUNE_FIRST_SEED = 100  # tuning seeds start here; the presets' tables use seeds below it
TUNE_TEST_SAMPLES = 256  # train.py tests every run at its end; tuning never reads it, so it is kept small

# What each field may take while tuned: (low, high, log scale). A method's fields and their ranges are in its
# entry of the method table (utils/names.py), with the literature they span; the optimizer's, for every method, here.
SPACE = {**method_space(), "lr": (1e-3, 0.5, True), "weight_decay": (1e-5, 1e-2, True)}
TUNE_FLAGS = {"trials": 20, "params": "", "tune_seeds": 1, "study": ""}
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def split_flags(argv: list) -> tuple:
    """tune.py's own flags apart from the config's."""
    flags, rest = dict(TUNE_FLAGS), []
    for arg in argv:
        key, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key not in TUNE_FLAGS:
            rest.append(arg)
            continue
        if isinstance(TUNE_FLAGS[key], int):
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"--{key}={value}: expected a whole number >= 1")
            value = int(value)
        flags[key] = value
    return flags, rest


def check_params(cfg: Config, names: list) -> None:
    if not names:
        raise UserError(f"--params: name the fields to tune, e.g. --params=temperature,kd_weight,alpha "
                        f"(tunable: {', '.join(SPACE)})")
    for name in names:
        if name not in SPACE:
            raise UserError(f"--params={name}: not tunable here; tunable: {', '.join(SPACE)}")
        methods = hparam_methods(name)
        if methods and cfg.method not in methods:
            raise UserError(f"--params={name}: a hyper-parameter of {', '.join(methods)}, "
                            f"not of --method={cfg.method}")
    if cfg.role != "student":
        raise UserError("tune.py tunes students (--role=student)")
    if cfg.first_seed + cfg.seeds > TUNE_FIRST_SEED:
        raise UserError(f"--first_seed={cfg.first_seed} --seeds={cfg.seeds}: the table's seeds reach "
                        f"{TUNE_FIRST_SEED}, where the tuning seeds start; tune on seeds the table does not use")
    if not cfg.val_fraction:
        raise UserError("tune.py selects on the validation split: pass --val_fraction (e.g. 0.02), "
                        "never the test split")


def check_study(name: str, out_dir: str) -> None:
    """--study names a folder and two files in out_dir, so it is checked as --run_name is: a plain name, not a
    path (a path puts the study and every trial's runs outside out_dir; a `?` makes SQLite open another file
    than the one named), no name the sweep writes there, no run's folder."""
    check_field("study", str, name, PLAIN_NAME)
    check_out_dir_name("study", name)
    if os.path.isfile(os.path.join(out_dir, name, CONFIG)):
        raise UserError(f"--study={name}: {os.path.join(out_dir, name)} is a run directory; pass another --study")


def teacher_of(cfg: Config) -> str:
    """The teacher every trial learns from, found once as a run would find it ("" for a method without one): a
    missing teacher is one line before the first trial, not a failure per trial. Trials run in <out_dir>/<study>,
    so a teacher run in out_dir is named to them."""
    from distill import needs_teacher
    from runtime.teacher import resolve_teacher_path

    if not needs_teacher(cfg):
        return cfg.teacher_checkpoint
    weights, run_dir = resolve_teacher_path(cfg)
    return run_dir or weights


def open_study(cfg: Config, db: str, study_name: str):
    """The study in <out_dir>/<study>.db, created or loaded; a folder, a file that is no SQLite database or a
    damaged one, and an out_dir that takes no file are one line each."""
    import optuna
    import sqlalchemy

    try:
        os.makedirs(cfg.out_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=cfg.out_dir).close()
    except OSError as e:
        raise cannot_write(e, cfg.out_dir) from None
    if os.path.isdir(db):
        raise UserError(f"{db}: a folder, not an Optuna study file (SQLite); pass another --study or move it")
    if os.path.isfile(db):
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:  # (an empty file is an empty SQLite database)
            raise UserError(f"{db}: not an Optuna study file (SQLite); pass another --study or move the file")
    # quoted, so a `?`, `%` or brace in out_dir is part of the path, not a query or Optuna's URL template
    url = sqlalchemy.engine.URL.create("sqlite", database=os.path.abspath(db)).render_as_string(hide_password=False)
    try:
        with study_lock(os.path.join(cfg.out_dir, study_name)):  # two processes creating its tables at once collide
            return optuna.create_study(study_name=study_name, storage=url.replace("{", "{{").replace("}", "}}"),
                                       load_if_exists=True, direction="maximize",
                                       sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                       pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise UserError(f"{db}: cannot open the study ({first_line(getattr(e, 'orig', None) or e)}); pass another "
                        f"--study or move the file") from None


def tuning_configs(cfg: Config, seeds: int, study: str, trial: int, values: dict, teacher: str = "") -> list:
    """One config per tuning seed: the trial's values, its own run directory, a small test split."""
    return [dataclasses.replace(cfg, **values, seed=TUNE_FIRST_SEED + i, max_test_samples=TUNE_TEST_SAMPLES,
                                out_dir=os.path.join(cfg.out_dir, study), run_name=f"trial{trial}_s{i}",
                                resume=False, overwrite=True, teacher_checkpoint=teacher or cfg.teacher_checkpoint)
            for i in range(seeds)]


def objective(cfg: Config, names: list, seeds: int, study: str, teacher: str = ""):
    import optuna

    def run(trial) -> float:
        values = {n: trial.suggest_float(n, SPACE[n][0], SPACE[n][1], log=SPACE[n][2]) for n in names}
        accs = []
        for i, c in enumerate(tuning_configs(cfg, seeds, study, trial.number, values, teacher)):
            def report(state, row, offset=i * c.epochs):
                if "val_acc" in row:  # --select_from leaves early epochs unevaluated
                    trial.report(row["val_acc"], offset + row["epoch"])
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"val {row['val_acc']:.2f}% at epoch {row['epoch']}")
            accs.append(train.main(c, on_epoch=report)["best_val_acc"])
        return sum(accs) / len(accs)
    return run


def finished(study, running: bool = False) -> int:
    """The complete and pruned trials of the study (and, with running, those running now)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED) + ((TrialState.RUNNING,) if running else ())
    return len(study.get_trials(deepcopy=False, states=states))


def trial_dir(folder: str, number: int) -> str:
    """A trial's first run directory (tuning_configs); its process holds its lock while the trial runs."""
    return os.path.join(folder, f"trial{number}_s0")


@contextmanager
def study_lock(folder: str):
    """<out_dir>/<study>/.study.lock: tune.py processes on one study count its trials and start the next one
    under it, one process at a time (an flock: the kernel drops it when its holder dies)."""
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, ".study.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def alive(run_dir: str) -> bool:
    """Whether the process of a running trial is still there: it holds the lock of the trial's run directory
    (utils/lock.py) from before the trial is created until it is told, however it ends."""
    if not os.path.isdir(run_dir):
        return False
    try:
        with run_lock(run_dir):
            return False
    except RunLocked:
        return True


def next_trial(study, trials: int, folder: str, held: ExitStack):
    """Under the study's lock: the trials whose process died (killed, power cut) are failed, then a new trial
    starts, its run directory locked in `held`, unless the study already holds `trials` complete, pruned or
    running ones, counted over every process on the study (then None)."""
    from optuna.trial import TrialState

    with study_lock(folder):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not alive(trial_dir(folder, t.number)):
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if finished(study, running=True) >= trials:
            return None
        trial = study.ask()
        held.enter_context(run_lock(trial_dir(folder, trial.number)))
        return trial


def run_trial(study, trial, objective) -> None:
    """One trial to its end, as study.optimize would: a value, pruned, or failed; a failure (a UserError
    among them: one line) stops the tune, as every later trial would fail the same way."""
    import optuna

    try:
        value = objective(trial)
    except optuna.TrialPruned as e:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        print(f"trial {trial.number}: pruned ({e})")
        return
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    study.tell(trial, value)
    print(f"trial {trial.number}: val {value:.2f}% ({', '.join(f'{k}={v:.4g}' for k, v in trial.params.items())})")


def main(argv: list) -> dict:
    if any(a in ("-h", "--help") for a in argv):
        raise HelpRequested(__doc__)
    flags, rest = split_flags(argv)
    cfg = make_config(rest)
    if cfg.task == SEGMENT:  # it would maximize pixel accuracy, not mIoU
        raise UserError(f"--task={SEGMENT}: tune.py searches classifiers' settings only so far")
    names = [n for n in flags["params"].split(",") if n]
    check_params(cfg, names)
    import optuna

    study_name = flags["study"] or f"tune_{cfg.method}_res{cfg.blocks}"
    check_study(study_name, cfg.out_dir)
    teacher = teacher_of(cfg)
    db = os.path.join(cfg.out_dir, f"{study_name}.db")
    study = open_study(cfg, db, study_name)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    if study.trials:  # a resumed or second process: seeded by what the study holds, so it samples anew
        study.sampler = optuna.samplers.TPESampler(seed=(cfg.seed + len(study.trials)) % (MAX_SEED + 1))
    folder = os.path.join(cfg.out_dir, study_name)
    done = finished(study)
    if done:
        print(f"{db}: {done} trial(s) already in the study, {max(0, flags['trials'] - done)} to go")
    run = objective(cfg, names, flags["tune_seeds"], study_name, teacher)
    while True:
        with ExitStack() as held:
            trial = next_trial(study, flags["trials"], folder, held)
            if trial is None:
                break
            run_trial(study, trial, run)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    if running:
        print(f"{db}: {running} trial(s) still running in another process; the recipe below is from the trials "
              f"finished so far (that process writes it again when it is done)")
    if not complete:
        raise UserError(f"{db}: no trial completed" + ("; rerun when the other process is done" if running else ""))
    best = study.best_trial
    recipe = {"fields": {n: best.params[n] for n in names if n in best.params},
              "study": study_name, "trial": best.number, "val_acc": best.value,
              "seeds": list(range(TUNE_FIRST_SEED, TUNE_FIRST_SEED + flags["tune_seeds"])),
              "method": cfg.method, "blocks": cfg.blocks, "trials": len(study.trials),
              "selected_on": "val (mean best val accuracy over the tuning seeds)"}
    path = os.path.join(cfg.out_dir, f"{study_name}.best.json")
    atomic_write_json(path, recipe)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in recipe["fields"].items())
    print(f"best of {len(complete)} complete trial(s): {shown} -> val {best.value:.2f}% (trial {best.number})")
    print(f"recipe: {path} (use: python run_experiments.py ... --recipe=@{path})")
    return recipe


@cli_entry
def cli(argv=None):
    main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    cli()
