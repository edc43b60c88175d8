"""Every test starts from the same process state and leaves it as it found it: torch's global RNG,
its thread count and the working directory are restored after each test.

The session's shared set-up: the tiny Fashion-MNIST idx data and the smoke teachers trained on it, each made
once. Tests only read them; a test that writes into a teacher run works on fixtures.copy_run of it, and a
shared run found changed fails the test that next asks for it (or the session's end), so no test depends
on another's order."""
import os

import pytest
import torch

from tests.fixtures import TINY_IDX, make_fashion_mnist_idx, small_run_args


@pytest.fixture(autouse=True)
def restore_process_state():
    rng, threads, cwd = torch.get_rng_state(), torch.get_num_threads(), os.getcwd()
    yield
    torch.set_rng_state(rng)
    torch.set_num_threads(threads)
    os.chdir(cwd)


@pytest.fixture(scope="session")
def fashion_idx(tmp_path_factory):
    """Fashion-MNIST idx files of 120 train and 40 test images (data.synthetic.fashion_pattern), their data
    cache already built, so every test meets the same folder whatever ran before it."""
    from config import make_config
    from data.dataset import load_dataset

    data = make_fashion_mnist_idx(tmp_path_factory.mktemp("fmnist"), **TINY_IDX)
    load_dataset(make_config(data_dir=str(data)))
    return data


def _state(run) -> dict:
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))}


@pytest.fixture(scope="session")
def smoke_teacher(fashion_idx, tmp_path_factory):
    """smoke_teacher(*flags) -> the run dir of the smoke teacher trained on fashion_idx at batch 32 with these
    flags (e.g. "--val_fraction=0.2", "--seed=1"), trained once a session per flag list. Read it only:
    spoil, lock or train students beside a fixtures.copy_run of it (a student writes its logits cache
    into the teacher run)."""
    import train
    from config import make_config

    trained = {}

    def check(run, state):
        assert _state(run) == state, f"{run}: a test wrote into the shared teacher run; give it a copy_run()"

    def teacher(*flags):
        if flags not in trained:
            out = tmp_path_factory.mktemp("teacher")
            s = train.main(make_config(small_run_args(fashion_idx, out, "--role=teacher", *flags, batch_size=32)))
            trained[flags] = (out / s["run_name"], _state(out / s["run_name"]))
        check(*trained[flags])
        return trained[flags][0]

    yield teacher
    for run, state in trained.values():
        check(run, state)
