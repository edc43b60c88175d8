"""Every test starts from the same process state and leaves it as it found it: torch's global RNG,
its thread count and the working directory are restored after each test."""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_process_state():
    rng, threads, cwd = torch.get_rng_state(), torch.get_num_threads(), os.getcwd()
    yield
    torch.set_rng_state(rng)
    torch.set_num_threads(threads)
    os.chdir(cwd)
