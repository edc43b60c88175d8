"""One process at a time per run directory: an exclusive fcntl.flock on run_dir/.lock.

The kernel drops a flock when its holder exits, however it exits (kill -9 included), so a lock is
never stale; the file stays behind and only says who held it last. The lock is re-entrant within a
process (the sweep holds it around train.main, which takes it again). POSIX only, like fcntl.
"""
import fcntl
import os
import socket
import sys
import time
from contextlib import contextmanager

from utils.errors import UserError, cannot_write
from utils.run_files import LOCK_FILE, TABLE_LOCK_FILE

_held = {}  # realpath of run dir -> [fd, depth]


class RunLocked(UserError):
    """Another process holds the run directory: train.py exits 2, the sweep skips that run."""


def holder_of(run_dir) -> str:
    """Who holds (or last held) the lock, as its file says: 'pid N on host (command), since time'."""
    try:
        with open(os.path.join(run_dir, LOCK_FILE), encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def run_lock(run_dir):
    """Hold run_dir's lock for the block (the directory is created if needed). RunLocked names the holder
    when another process has it; a folder that cannot be written is one UserError line too."""
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise cannot_write(e, run_dir) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLocked(f"{run_dir} is in use by {holder_of(run_dir)}; wait for it to finish, or use "
                        f"another --run_name or --out_dir") from None
    try:
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        note = f"pid {os.getpid()} on {socket.gethostname()} ({command}), since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        _held[key] = [fd, 1]
        yield
    finally:
        _held.pop(key, None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)




@contextmanager
def table_lock(out_dir, wait_seconds: float = 120.0):
    """Hold out_dir's results-table lock for the block, waiting up to `wait_seconds` for a sweep that
    holds it: two sweeps on one out_dir write results.csv/md one after the other, each from every run
    finished by then, never one over the other's. A folder that takes no file needs no guard (a finished
    sweep reruns read-only and writes nothing)."""
    try:
        fd = os.open(os.path.join(out_dir, TABLE_LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunLocked(f"{out_dir}: another sweep has been writing its results table for "
                                    f"{wait_seconds:g} s; rerun when it is done") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the flock
