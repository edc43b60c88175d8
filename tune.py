"""Tune a method's hyper-parameters on the validation split with Optuna.

    python tune.py --preset=reduced --method=kd --blocks=4 --trials=20 --params=temperature,kd_weight,alpha
    python run_experiments.py --preset=reduced --recipe=@checkpoints/reduced/tune_kd_res4.best.json

Every trial trains the student of the config (preset and overrides as for train.py) with the sampled
values, on tuning seeds (100, 101, ...) that no preset's table uses, and scores it by its best validation
accuracy (mean over the tuning seeds): the test split never chooses. TPE samples the values; the median
pruner stops a trial whose validation accuracy after an epoch is below the median of earlier trials' at
that epoch. The study lives in <out_dir>/<study>.db (SQLite): a killed tune continues where it stopped
when run again, and two processes given the same command share it. At the end the best values are
printed and written to <out_dir>/<study>.best.json, a recipe the sweep takes with --recipe=@<file>.

Flags of tune.py itself: --trials=N (complete or pruned trials the study should hold; default 20),
--params=a,b,c (fields to tune, from SPACE below), --tune_seeds=N (seeds per trial; default 1),
--study=NAME (default tune_<method>_res<blocks>).
"""
import dataclasses
import logging
import os
import sys

import train
from config import Config, make_config
from utils.atomic import atomic_write_json
from utils.errors import HelpRequested, UserError, cli_entry

TUNE_FIRST_SEED = 100  # tuning seeds start here; the presets' tables use seeds below it
TUNE_TEST_SAMPLES = 256  # train.py tests every run at its end; tuning never reads it, so it is kept small

# What each field may take while tuned: (low, high, log scale). The ranges span the literature's values:
# T 1-8 (Hinton et al. 2015 use 2-20; mdistiller 4), DKD's beta 0.5-16 (Zhao et al. 2022: 1-8),
# AT's weight around mdistiller's 1000, FitNet's around its 100.
SPACE = {
    "temperature": (1.0, 8.0, True),
    "alpha": (0.0, 1.0, False),
    "kd_weight": (0.1, 10.0, True),
    "dkd_alpha": (0.25, 4.0, True),
    "dkd_beta": (0.5, 16.0, True),
    "at_weight": (10.0, 1e4, True),
    "fitnet_weight": (1.0, 1e3, True),
    "fm_temperature": (0.5, 8.0, True),
    "lr": (1e-3, 0.5, True),
    "weight_decay": (1e-5, 1e-2, True),
}
TUNE_FLAGS = {"trials": 20, "params": "", "tune_seeds": 1, "study": ""}


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
    methods = {f.name: f.metadata["methods"] for f in dataclasses.fields(Config)}
    for name in names:
        if name not in SPACE:
            raise UserError(f"--params={name}: not tunable here; tunable: {', '.join(SPACE)}")
        if methods[name] and cfg.method not in methods[name]:
            raise UserError(f"--params={name}: a hyper-parameter of {', '.join(methods[name])}, "
                            f"not of --method={cfg.method}")
    if cfg.role != "student":
        raise UserError("tune.py tunes students (--role=student)")
    if cfg.first_seed + cfg.seeds > TUNE_FIRST_SEED:
        raise UserError(f"--first_seed={cfg.first_seed} --seeds={cfg.seeds}: the table's seeds reach "
                        f"{TUNE_FIRST_SEED}, where the tuning seeds start; tune on seeds the table does not use")
    if not cfg.val_fraction:
        raise UserError("tune.py selects on the validation split: pass --val_fraction (e.g. 0.02), "
                        "never the test split")


def tuning_configs(cfg: Config, seeds: int, study: str, trial: int, values: dict) -> list:
    """One config per tuning seed: the trial's values, its own run directory, a small test split."""
    return [dataclasses.replace(cfg, **values, seed=TUNE_FIRST_SEED + i, max_test_samples=TUNE_TEST_SAMPLES,
                                out_dir=os.path.join(cfg.out_dir, study), run_name=f"trial{trial}_s{i}",
                                resume=False, overwrite=True)
            for i in range(seeds)]


def objective(cfg: Config, names: list, seeds: int, study: str):
    import optuna

    def run(trial) -> float:
        values = {n: trial.suggest_float(n, SPACE[n][0], SPACE[n][1], log=SPACE[n][2]) for n in names}
        accs = []
        for i, c in enumerate(tuning_configs(cfg, seeds, study, trial.number, values)):
            def report(state, row, offset=i * c.epochs):
                if "val_acc" in row:  # --select_from leaves early epochs unevaluated
                    trial.report(row["val_acc"], offset + row["epoch"])
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"val {row['val_acc']:.2f}% at epoch {row['epoch']}")
            accs.append(train.main(c, on_epoch=report)["best_val_acc"])
        return sum(accs) / len(accs)
    return run


def finished(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in states for t in study.trials)


def main(argv: list) -> dict:
    if any(a in ("-h", "--help") for a in argv):
        raise HelpRequested(__doc__)
    flags, rest = split_flags(argv)
    cfg = make_config(rest)
    names = [n for n in flags["params"].split(",") if n]
    check_params(cfg, names)
    import optuna

    study_name = flags["study"] or f"tune_{cfg.method}_res{cfg.blocks}"
    os.makedirs(cfg.out_dir, exist_ok=True)
    db = os.path.join(cfg.out_dir, f"{study_name}.db")
    # the heartbeat marks a trial whose process died (killed, power cut) as failed once it is 2 minutes stale
    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(db)}", heartbeat_interval=30,
                                         grace_period=120)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    logging.getLogger("optuna").setLevel(logging.WARNING)
    if study.trials:  # a resumed or second process: seeded by what the study holds, so it samples anew
        study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(study.trials))
    done = finished(study)
    if done:
        print(f"{db}: {done} trial(s) already in the study, {max(0, flags['trials'] - done)} to go")
    if flags["trials"] > done:
        study.optimize(objective(cfg, names, flags["tune_seeds"], study_name), n_trials=flags["trials"] - done,
                       catch=(UserError,), show_progress_bar=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError(f"{db}: no trial completed; see the errors above")
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
