"""The sweep's runs as Ray tasks (`run_experiments.py --launcher=ray`): on a local Ray started for the
sweep, or on a cluster (`--ray_address=host:port` or RAY_ADDRESS).

A task trains `runs_per_task` runs of one group (the sweep's own `run_group`: complete runs skipped,
partial ones resumed from checkpoint.pt, a failure recorded in its summary.json) with `cpus_per_task`
CPUs (its torch threads; 0: as many as a local sweep's runs use, so bf16 gives the same digits) and
min(1, runs x gpus_per_run) GPUs, so `--gpus_per_run=0.25` packs four runs on a GPU. A task whose
worker died (killed, out of host memory, a lost node) runs again, up to RETRIES times, and resumes
from the last checkpoint it can see; after that its runs are recorded as failed and the sweep goes on.

Where the files go: with a shared out_dir (every node sees the driver's paths; the default on a local
Ray) a task works in the driver's folder and writes its run directories as a local sweep does.
Without one (`--ray_shared_fs=False`) the driver sends each task the files it starts from (the
teacher's run, a partial run's checkpoint), the task trains under a private folder of its node and
returns every file of its run directories, and the driver writes them atomically (summary.json last,
so a run is complete only once all of it is on disk).
"""
import dataclasses
import importlib
import os
import socket
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from config import config_to_dict, teacher_run_name
from distill import needs_teacher
from runtime.run_dir import RUN_WEIGHTS, is_complete, run_dir_of
from utils.atomic import atomic_write_bytes, atomic_write_json
from utils.errors import UserError
from utils.lock import RunLocked, run_lock
from utils.reports import write_training_summary
from utils.run_files import CONFIG, SUMMARY, TRAINING_SUMMARY, read_summary, write_summary

RETRIES = 2  # runs of a task again after its worker died; each resumes from the last checkpoint.pt it sees
ROOT = Path(__file__).resolve().parents[1]
# what a cluster's workers get of this checkout (runtime_env working_dir): the code, not outputs or data
UPLOAD_EXCLUDES = [".git", ".venv", "checkpoints", "data/cache", "data/fashion-mnist", "**/__pycache__",
                   "*.safetensors", "*.pt"]
TASK_ENV = {"TQDM_DISABLE": "1"}  # no per-batch bars from the workers; each epoch's line still reaches the driver
SUMMARY_PATHS = ("teacher_run", "teacher_weights")  # summary.json fields that hold paths under out_dir


LOCAL_ADDRESSES = ("", "auto", "local")  # Ray's own words for a local Ray (its "auto" is no precision)


def _is_local(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return address in LOCAL_ADDRESSES or host in ("localhost", "127.0.0.1", socket.gethostname())


REACH_SECONDS = 15  # how long a named cluster may take to answer before the sweep stops with one line


def check_reachable(address: str, seconds: float = REACH_SECONDS) -> None:
    """A named cluster's address answers a TCP connection within `seconds`, or one line names it (Ray
    itself would retry for minutes). "auto"/"local"/"" start or find a local Ray: nothing to check."""
    if address in LOCAL_ADDRESSES:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray_address={address}: expected host:port (or ray://host:port)")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as e:
        raise UserError(f"--ray_address={address}: no Ray cluster answers there within {seconds:g} s "
                        f"({e.strerror or type(e).__name__}); start one (ray start --head) or fix the address")


def _importable(fn):
    """`fn` by its module's name when it lives in the script being run (__main__), so Ray pickles it by
    reference and the workers import the project's module instead of receiving a copy of the script."""
    if fn.__module__ != "__main__":
        return fn
    return getattr(importlib.import_module(Path(sys.modules["__main__"].__file__).stem), fn.__name__)


def _read_run_dir(run_dir: str, names=None) -> dict:
    """{path relative to `run_dir`: bytes} of its files, those in subfolders (tb/) included, hidden ones
    (.lock) left out (all of them, or those in `names`)."""
    if not os.path.isdir(run_dir):
        return {}
    files = {}
    for folder, dirs, found in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(found):
            rel = os.path.relpath(os.path.join(folder, n), run_dir)
            if not n.startswith(".") and (names is None or rel in names):
                files[rel] = Path(folder, n).read_bytes()
    return files


def write_run_dir(run_dir: str, files: dict) -> None:
    """A task's run directory written under the driver's out_dir, each file atomically, summary.json last."""
    for name in sorted(files, key=lambda n: n == SUMMARY):
        atomic_write_bytes(os.path.join(run_dir, name), files[name])


def _unstage(run_dir: str, cfg, stage: str) -> None:
    """Make the files of a run trained under `stage` read as if trained in cfg.out_dir: config.json is
    the driver's config, and summary paths under the stage point into out_dir."""
    if os.path.isfile(os.path.join(run_dir, CONFIG)):
        atomic_write_json(os.path.join(run_dir, CONFIG), config_to_dict(cfg))
    summary = read_summary(run_dir)
    if summary is None or summary.get("status") != "complete":
        return
    for key in SUMMARY_PATHS:
        value = summary.get(key)
        if isinstance(value, str) and Path(value).is_relative_to(stage):
            summary[key] = os.path.join(cfg.out_dir, os.path.relpath(value, stage))
    write_training_summary(os.path.join(run_dir, TRAINING_SUMMARY), summary)
    write_summary(run_dir, summary)


def train_task(run_group, cfgs: list, cwd: str, threads: int, inputs=None, teacher=None):
    """On a Ray worker: run_group(cfgs) -> (statuses, files). Shared out_dir (`inputs` None): in the
    driver's working directory, files None. Else under a private folder seeded with `inputs` and
    `teacher` ({run name: {file: bytes}}), returning {run name: {file: bytes}} of every run of `cfgs`."""
    import torch

    torch.set_num_threads(threads)  # the CPUs Ray gave the task (a reused worker may have had others)
    if inputs is None:
        if not os.path.isdir(cwd):
            raise UserError(f"{cwd}: the driver's folder is not on node {socket.gethostname()}; without a "
                            f"shared filesystem pass --ray_shared_fs=False")
        os.chdir(cwd)  # relative out_dir and data_dir resolve as in the driver
        return run_group(cfgs), None
    with tempfile.TemporaryDirectory(prefix="kd-ray-") as stage:
        for name, files in {**(teacher or {}), **inputs}.items():
            write_run_dir(os.path.join(stage, name), files)
        staged = [dataclasses.replace(c, out_dir=stage) for c in cfgs]
        statuses = run_group(staged)
        out = {}
        for cfg, s in zip(cfgs, staged):
            _unstage(run_dir_of(s), cfg, stage)
            out[os.path.basename(run_dir_of(s))] = _read_run_dir(run_dir_of(s))
        return statuses, out


def task_cpus(base, role: str, most_cpus: int) -> int:
    """The CPUs a task asks for, which are also its torch threads. The teacher's task: every CPU of the largest
    node (every student waits for it). A student's: --cpus_per_task, or where it is 0 (not set) the threads a
    local sweep's runs use, torch's in this driver (at most the largest node's CPUs): bf16 results depend on
    the thread count, so the same grid gives the same numbers under either launcher."""
    import torch

    if role == "teacher":
        return most_cpus
    return base.cpus_per_task or max(1, min(torch.get_num_threads(), most_cpus))


class RaySweep:
    """`with RaySweep(base, run_group) as run_groups:` then `for cfgs, result in run_groups(groups)`,
    in the order tasks finish; result is the statuses of cfgs, or the exception that ended their task."""

    def __init__(self, base, run_group):
        try:
            import ray
        except ImportError:
            raise UserError("--launcher=ray needs Ray: pip install -r requirements-scale.txt (make setup does)")
        self.ray, self.base, self.run_group = ray, base, _importable(run_group)
        self.address = base.ray_address or os.environ.get("RAY_ADDRESS", "")
        self.shared = base.ray_shared_fs if base.ray_shared_fs is not None else _is_local(self.address)
        self.started, self._teacher_files = False, None

    def __enter__(self):
        ray = self.ray
        if not ray.is_initialized():  # else: the caller's Ray (a test's, a notebook's) as it is
            # the job's runtime_env, not each task's: workers Ray starts with the job can take the tasks
            env = {"env_vars": TASK_ENV}
            if self.address and not _is_local(self.address):
                env.update(working_dir=str(ROOT), excludes=UPLOAD_EXCLUDES)
            check_reachable(self.address)
            ray.init(address=self.address or None, include_dashboard=False, logging_level="WARNING", runtime_env=env)
            self.started = True
        self.gpus = self.base.gpus_per_run if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        most = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
        self.most_cpus = max(1, int(most))
        if self.base.cpus_per_task > most:  # Ray would wait for such a node forever
            self.__exit__()
            raise UserError(f"--cpus_per_task={self.base.cpus_per_task}: the largest node of this Ray cluster "
                            f"has {most:g} CPUs")
        # a Ray the caller started (a test's, a notebook's) has no TASK_ENV of ours: each task asks for it
        self.task = ray.remote(max_retries=RETRIES, **({} if self.started else {"runtime_env": {"env_vars": TASK_ENV}}))(
            train_task)
        return self.run

    def __exit__(self, *exc):
        if self.started:
            self.ray.shutdown()

    def _teacher(self):
        """The teacher run's files in the object store, put there once and shared by every task."""
        if self._teacher_files is None:
            teacher_dir = os.path.join(self.base.out_dir, teacher_run_name(self.base))
            files = _read_run_dir(teacher_dir, (CONFIG, SUMMARY, *RUN_WEIGHTS))
            self._teacher_files = self.ray.put({teacher_run_name(self.base): files})
        return self._teacher_files

    def _submit(self, cfgs: list):
        inputs = teacher = None
        if not self.shared:  # the files the task starts from: partial runs, and the teacher it learns from
            inputs = {os.path.basename(run_dir_of(c)): _read_run_dir(run_dir_of(c)) for c in cfgs}
            if any(needs_teacher(c) and not c.teacher_checkpoint for c in cfgs):
                teacher = self._teacher()
        # the teacher, which every student waits for, trains alone: on every CPU of the largest node
        cpus = task_cpus(self.base, cfgs[0].role, self.most_cpus)
        return self.task.options(num_cpus=cpus, num_gpus=min(1.0, self.gpus * len(cfgs))).remote(
            self.run_group, cfgs, os.getcwd(), cpus, inputs, teacher)

    def _lock(self, cfgs: list, locks: dict) -> list:
        """Without a shared out_dir the driver holds each run's lock from submit to write (a task's own
        lock is on its private copy): the runs another process holds, with that holder as their status."""
        busy = []
        for c in cfgs:
            stack = ExitStack()
            try:
                stack.enter_context(run_lock(run_dir_of(c)))
                locks[id(c)] = stack
            except RunLocked as e:
                busy.append((c, f"skipped: {e}"))
        return busy

    def run(self, groups: list):
        n = self.base.runs_per_task
        pending, skipped, busy, locks = {}, [], [], {}
        try:
            for group in groups:  # every task is queued first: Ray starts as many as the cluster holds
                complete = [is_complete(run_dir_of(c)) for c in group]
                skipped += [c for c, ok in zip(group, complete) if ok]
                todo = [c for c, ok in zip(group, complete) if not ok]
                if not self.shared:
                    busy += self._lock(todo, locks)
                    todo = [c for c in todo if id(c) in locks]
                for i in range(0, len(todo), n or len(todo) or 1):
                    chunk = todo[i:i + n] if n else todo
                    pending[self._submit(chunk)] = chunk
            if skipped:
                yield skipped, ["skipped"] * len(skipped)
            if busy:
                yield [c for c, _ in busy], [why for _, why in busy]
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                cfgs = pending.pop(ready[0])
                try:
                    statuses, files = self.ray.get(ready[0])
                except Exception as e:  # the task's worker died RETRIES + 1 times, or it raised
                    yield cfgs, getattr(e, "cause", None) or e
                    continue
                for cfg in cfgs:
                    if files is not None:
                        write_run_dir(run_dir_of(cfg), files[os.path.basename(run_dir_of(cfg))])
                    if id(cfg) in locks:
                        locks.pop(id(cfg)).close()
                yield cfgs, statuses
        finally:
            for stack in locks.values():
                stack.close()
