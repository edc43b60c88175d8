"""Files the project writes: they follow the umask; a read-only out_dir is one line for train.py, the sweep
and evaluate.py (the sweep's table still shown); a full disk names the file meant, never the temp file
beside it, which is removed, inside torch.save too and during training."""
import os
import stat
import subprocess
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import torch

import evaluate
import run_experiments
import train
from config import make_config
from data.dataset import load_dataset
from tests.fixtures import make_fashion_mnist_idx, one_line_exit, read_only, small_run_args

args = partial(small_run_args, batch_size=32)


@contextmanager
def tiny_disk(folder: Path, size: str):
    """A tmpfs of `size` mounted on `folder` for the block (root only; skips where it cannot mount)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


# ----------------------------------------------------------------------------- the umask

def test_written_files_follow_the_umask(tmp_path):
    from utils.atomic import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "run" / "summary.json", {"status": "complete"})
        data = make_fashion_mnist_idx(tmp_path / "data", n_train=20, n_test=10)
        load_dataset(make_config(data_dir=str(data)))
        os.umask(0o077)
        atomic_write_json(tmp_path / "run" / "private.json", {})
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "run" / "summary.json") == 0o644  # not mkstemp's 0600
    assert [mode(p) for p in (data / "cache").glob("*.safetensors")] == [0o644]
    assert mode(tmp_path / "run" / "private.json") == 0o600  # a stricter umask is followed too


# ----------------------------------------------------------------------------- read-only folders

def test_read_only_out_dir_is_one_line_for_train_sweep_and_evaluate(fashion_idx, tmp_path, capsys):
    data, out = fashion_idx, tmp_path / "sweep"
    base = args(data, out, "--sweep_blocks=[1]", "--sweep_methods=[]", "--sweep_precisions=[fp32]")
    assert run_experiments.main(make_config(base)) == 0
    student = out / "fashion-mnist_res1_b32_fp32_ce_s0"
    capsys.readouterr()
    with read_only(out):  # a complete sweep reruns: nothing changed, nothing to write
        assert run_experiments.main(make_config(base)) == 0
    (student / "evaluation.json").unlink()
    (out / "results.md").unlink()
    with read_only(out):
        line, stdout = one_line_exit(run_experiments.cli, base, capsys, quiet=False)
        assert line.startswith(f"error: {out}: cannot write there") and "the table above is not saved" in line
        assert "| res1 |" in stdout  # the table is shown even though it cannot be saved
        line, stdout = one_line_exit(evaluate.cli, [f"--run={student}", f"--data_dir={data}"], capsys, quiet=False)
        assert "cannot write there" in line and "evaluation.json is not saved" in line
        assert "test accuracy" in stdout
        line, _ = one_line_exit(train.cli, args(data, out, "--blocks=2", "--method=ce"), capsys, quiet=False)
        assert line.startswith(f"error: {out}") and "cannot write there" in line
        line, _ = one_line_exit(run_experiments.cli, base + ["--sweep_blocks=[2]"], capsys, quiet=False)
        assert "cannot write there" in line
    assert not (student / "evaluation.json").exists() and not (out / "fashion-mnist_res2_b32_fp32_ce_s0").exists()


# ----------------------------------------------------------------------------- a full disk

def test_a_full_disk_names_the_path(tmp_path):
    from utils.atomic import atomic_write_bytes

    with tiny_disk(tmp_path / "tiny", "64k") as disk:
        with pytest.raises(OSError) as e:
            atomic_write_bytes(disk / "summary.json", b"x" * 1_000_000)
        assert e.value.filename == str(disk / "summary.json")
        assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_a_full_disk_inside_torch_save_is_an_os_error_naming_the_checkpoint(tmp_path):
    import errno

    from utils.run_files import CHECKPOINT_KEYS, save_checkpoint

    state = {k: 0 for k in CHECKPOINT_KEYS}
    state["model"] = {"w": torch.zeros(400_000)}  # 1.6 MB: the zip's first bytes fit, its tensor data does not
    with tiny_disk(tmp_path / "disk", "1m") as disk:
        with pytest.raises(OSError) as e:  # torch.save's RuntimeError("... unexpected pos ...") before
            save_checkpoint(disk / "checkpoint.pt", state)
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(disk / "checkpoint.pt")
        assert os.listdir(disk) == []  # the temp file is removed


def test_a_full_disk_during_training_is_one_line(fashion_idx, tmp_path, capsys):
    with tiny_disk(tmp_path / "disk", "1m") as disk:
        line, _ = one_line_exit(train.cli, args(fashion_idx, disk, "--blocks=4", "--method=ce"), capsys,
                                quiet=False)
        ckpt = disk / "fashion-mnist_res4_b32_fp32_ce_s0" / "checkpoint.pt"
        assert line.startswith(f"error: {ckpt}: No space left on device"), line
