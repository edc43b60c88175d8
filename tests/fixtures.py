"""The tests' shared set-up, in one place (conftest.py holds the pytest fixtures built on it): the small-run
command line, the synthetic data files (data/synthetic.py, re-exported), shared runs copied before a test
writes into them, read-only folders, interrupted runs, scripts run in-process, and the one check that a
failure is one line."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from data.synthetic import (INTEL_CLASSES, ODD_CORRUPT, ODD_VALID, cifar_pattern, class_image,  # noqa: F401
                            fashion_pattern, intel_test_per_class, make_cifar, make_fashion_mnist_idx,
                            make_imagefolder, make_intel_folder, scene_image, write_idx)

TINY_IDX = dict(n_train=120, n_test=40)  # the session's idx data (conftest.fashion_idx): 4 batches of 32 a run


# ----------------------------------------------------------------------------- a small run

def small_run_args(data_dir=None, out_dir=None, *extra: str, **flags) -> list:
    """A small test run's command line: `--preset=smoke`, `--data_dir` and `--out_dir` where given, then a
    `--name=value` per keyword in the order given (the run's sizes: max_train_samples, batch_size, epochs, ...),
    then `extra` as written. A later flag wins, so `extra` overrides a keyword. Without data_dir a run reads
    the real Fashion-MNIST (data/ or the system copy)."""
    argv = ["--preset=smoke"]
    argv += [f"--data_dir={data_dir}"] if data_dir is not None else []
    argv += [f"--out_dir={out_dir}"] if out_dir is not None else []
    return argv + [f"--{name}={value}" for name, value in flags.items()] + list(extra)


def copy_run(run: Path, parent: Path, skip: tuple = ()) -> Path:
    """A copy of a run directory under `parent`, by its own name (a run dir's name is its run name): what a
    test spoils, deletes from, locks or trains a student beside, never the shared run itself. `skip`: names
    left out (e.g. "logits_cache")."""
    dest = Path(parent) / Path(run).name
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(*skip))
    return dest


def files_of(folder: Path) -> dict:
    """{relative path: bytes} of every file under `folder`."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _writable(folder: Path) -> bool:
    try:
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


@contextmanager
def read_only(*folders):
    """The folders (and everything in them) read-only for this process, root included: the write bits
    off, and where that does not stop root, the immutable attribute (chattr +i). Skips when neither can."""
    folders = [Path(f) for f in folders]
    every = [p for f in folders for p in [f, *f.rglob("*")]]
    modes = {p: p.stat().st_mode for p in every}
    for p in every:
        p.chmod(modes[p] & ~0o222)
    immutable = False
    try:
        if _writable(folders[0]):  # root ignores the mode bits
            immutable = subprocess.run(["chattr", "-R", "+i", *map(str, folders)], capture_output=True).returncode == 0
            if not immutable or _writable(folders[0]):
                pytest.skip("cannot make a folder read-only for this user here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", *map(str, folders)], check=True)
        for p in every:
            p.chmod(modes[p])


# ----------------------------------------------------------------------------- interruptions

def interrupt_after_first_epoch(monkeypatch):
    """train.py's runs stop (as a kill would) during their second epoch, after the first epoch's
    checkpoint is written; undo with monkeypatch.undo() or a monkeypatch.context()."""
    import train

    real = train.train_epochs_together

    def epoch_then_stop(trainees, sampler, teacher=None, epoch=0, desc=""):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(trainees, sampler, teacher, epoch, desc)

    monkeypatch.setattr(train, "train_epochs_together", epoch_then_stop)


# ----------------------------------------------------------------------------- command lines

def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    """`python <script> <args>` run in this process, from the project root: its exit code, stdout and
    stderr, as subprocess.run(capture_output=True, text=True) returns them, without the ~2 s a fresh
    interpreter spends importing torch. The script runs as __main__ through its own entry point, so its
    error handling is the one a user meets; an exception that escapes it propagates and fails the test
    (a user would have seen a traceback). stderr holds what a user's terminal would: sys.stderr, what C
    code writes to file descriptor 2, the warnings Python shows by default, and a string passed to
    sys.exit. The environment and torch's thread count are restored. Not seen: warnings raised while
    importing modules this process imported before. Tests that need a real process (a kill, a crash, an
    import that must not happen) use subprocess."""
    import contextlib
    import io
    import os
    import runpy
    import sys
    import tempfile
    import warnings

    import torch

    out, err, argv, env, threads, code = io.StringIO(), io.StringIO(), sys.argv, dict(os.environ), \
        torch.get_num_threads(), 0
    root = Path(__file__).resolve().parents[1]
    sys.argv = [script, *args]
    with tempfile.TemporaryFile("w+") as fd2, warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()  # Python's defaults: DeprecationWarning only from __main__
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        saved_fd2 = os.dup(2)
        os.dup2(fd2.fileno(), 2)
        try:
            with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_path(str(root / script), run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=err)  # as the interpreter prints it
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd2, 2)
            os.close(saved_fd2)
            sys.argv = argv
            os.environ.clear()
            os.environ.update(env)
            torch.set_num_threads(threads)
        fd2.seek(0)
        written = fd2.read()
    text = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), text + written + err.getvalue())


# ----------------------------------------------------------------------------- a failure is one line

def one_line_exit(cli, argv, capsys, code=2, *, quiet=True) -> tuple:
    """Run a script's cli in-process: it must exit `code` with one error line on stderr, never a traceback.
    Returns (that line, stdout); only what this call prints counts. quiet=True: the line is all of stderr
    (the run stopped before it printed anything). quiet=False: a run that fails once it has started may print
    progress bars and warnings first; the line is then the last on stderr and the only one saying "error:"."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert e.value.code == code, err
    assert lines and "Traceback" not in err, err
    if quiet:
        assert len(lines) == 1, err
    else:
        assert [ln for ln in lines if "error:" in ln] == lines[-1:], err
    return lines[-1], out


def one_line(r: subprocess.CompletedProcess) -> str:
    """The one stderr line of a script run (run_script) that must exit 2, never a traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


ROOT = Path(__file__).resolve().parents[1]


def product_files() -> list:
    """The project's tracked (and new, not ignored) Python files, tests and docs excluded."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    return [f for f in out if not f.startswith(("tests/", "docs/")) and (ROOT / f).is_file()]


def literals_outside(words, allowed) -> list:
    """'file:line: word' for each string constant equal to one of `words` in a product file, except where
    allowed(file, word) says the file may name it (one table per concept: its owner, presets.py, ...)."""
    import ast
    found = []
    for rel in product_files():
        for node in ast.walk(ast.parse((ROOT / rel).read_text(), rel)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words \
                    and not allowed(rel, node.value):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def load_script(rel: str):
    """A script outside the packages (teachers/release.py, docs/config_doc.py, ...) as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(Path(rel).stem, ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
