"""One process per run directory (utils/lock.py): a second process is one line naming the holder, a killed
holder leaves no lock behind, the lock is exclusive between open files and reentrant in its holder, and a
sweep whose teacher run another process holds stops, saying so."""
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from config import make_config
from tests.fixtures import one_line_exit, small_run_args

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "fashion-mnist_teacher_seed12"
args = partial(small_run_args, batch_size=32)

HOLD = "import sys, time; from utils.lock import run_lock\nwith run_lock(sys.argv[1]):\n print('held', flush=True)\n" \
       " time.sleep(120)\n"


def test_second_process_exits_2_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path, capsys):
    import train
    from utils.lock import run_lock

    run = tmp_path / "out" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err, _ = one_line_exit(train.cli, small_run_args(f"{tmp_path}/none", f"{tmp_path}/out", "--blocks=1",
                                                         "--run_name=busy"), capsys)
        assert f"pid {holder.pid}" in err and "in use" in err and str(run) in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(run):  # the kernel dropped the killed holder's lock: nothing stale to clean up
        pass


def test_lock_is_exclusive_between_open_files_and_reentrant_in_its_holder(tmp_path):
    import fcntl

    from utils.lock import RunLocked, run_lock

    with run_lock(tmp_path / "r"):
        with run_lock(tmp_path / "r"):  # the sweep holds it around train.main, which takes it again
            pass
        fd = os.open(tmp_path / "r" / ".lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    fd = os.open(tmp_path / "r" / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end of the block
    with pytest.raises(RunLocked, match="in use by pid"):
        with run_lock(tmp_path / "r"):
            pass
    os.close(fd)


def test_teacher_held_by_another_process_stops_the_sweep_saying_so(fashion_idx, tmp_path, capsys):
    import fcntl

    import run_experiments

    (tmp_path / TEACHER).mkdir()
    fd = os.open(tmp_path / TEACHER / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_experiments.main(make_config(args(fashion_idx, tmp_path, "--sweep_blocks=[1]"))) == 1
    finally:
        os.close(fd)
    out = capsys.readouterr().out
    assert "in use by" in out and "stopping the sweep" in out
    assert not (tmp_path / "fashion-mnist_res1_b32_fp32_ce_s0").exists()
