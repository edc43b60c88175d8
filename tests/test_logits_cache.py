"""The teacher-logit cache: a spoiled cache file (torn, a pickle, the wrong shape, or the right shape with
wrong values) is one line and rebuilt to the teacher's own logits under the same fingerprint, a sweep over a
torn cache completes every run, and a read-only teacher run caches under the student's out_dir."""
import json
import pickle
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import run_experiments
import train
from config import make_config
from tests.fixtures import copy_run, files_of, read_only, small_run_args

SMALL = small_run_args(max_train_samples=128, max_test_samples=64, epochs=1, augment="flip")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train.main(make_config(SMALL, role="teacher", out_dir=str(out)))
    return out / "fashion-mnist_teacher_seed12"


def _kd(teacher_dir, out, **kw):
    return make_config(SMALL, method="kd", teacher_checkpoint=str(teacher_dir), out_dir=str(out), **kw)


def _cache_files(teacher_dir):
    return sorted((teacher_dir / "logits_cache").glob("*.safetensors"))


def _spoil(path: Path, how: str):
    if how == "torn":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "pickle":
        path.write_bytes(pickle.dumps({"logits": [[0.0] * 10]}))
    elif how == "wrong-shape":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        save_file({"logits": torch.zeros(3, 10)}, str(path), metadata=meta)
    elif how == "poisoned":  # well-formed, right shape, right fingerprint, wrong values
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta, shape = f.metadata(), f.get_tensor("logits").shape
        save_file({"logits": torch.zeros(shape)}, str(path), metadata=meta)


@pytest.mark.parametrize("how", ["torn", "pickle", "wrong-shape", "poisoned"])
def test_a_spoiled_logits_cache_is_one_line_then_rebuilt(how, teacher_dir, tmp_path, capsys):
    train.main(_kd(teacher_dir, tmp_path / "first"))
    files = _cache_files(teacher_dir)
    assert files
    from safetensors.torch import load_file

    honest = {f: load_file(str(f))["logits"].clone() for f in files}  # a copy: the file is spoiled in place
    for f in files:
        _spoil(f, how)
    capsys.readouterr()
    train.main(_kd(teacher_dir, tmp_path / "second"))
    err = capsys.readouterr().err
    assert all(f"{f}: " in err and "; rebuilding" in err for f in files), err
    assert "Traceback" not in err
    for f in files:  # rebuilt to what it was: the teacher's own logits, under the same fingerprint
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as now:
            assert now.metadata()["fingerprint"] == f.name.removesuffix(".safetensors")
            assert torch.allclose(now.get_tensor("logits"), honest[f], atol=1e-5)
    a, b = (json.loads((tmp_path / d / "fashion-mnist_res4_b64_fp32_kd_s0" / "history.json").read_text())
            for d in ("first", "second"))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_a_sweep_with_a_torn_cache_completes_every_run(teacher_dir, tmp_path):
    base = _kd(teacher_dir, tmp_path / "sweep", sweep_blocks=(2,), sweep_methods=("kd", "dkd"),
               sweep_precisions=("fp32",))
    train.main(_kd(teacher_dir, tmp_path / "warm"))
    for f in _cache_files(teacher_dir):
        f.write_bytes(b"\x00garbage")
    assert run_experiments.main(base) == 0
    rows = (tmp_path / "sweep" / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(",complete," in r for r in rows)


# ----------------------------------------------------------------------------- a read-only teacher run

def test_read_only_teacher_run_caches_logits_under_the_students_out_dir(fashion_idx, smoke_teacher, tmp_path, capsys):
    args = partial(small_run_args, fashion_idx, tmp_path, batch_size=32)
    teacher = copy_run(smoke_teacher(), tmp_path / "teacher")
    before = files_of(teacher)
    with read_only(teacher):
        s = train.main(make_config(args("--blocks=1", "--augment=flip", f"--teacher_checkpoint={teacher}")))
    err = capsys.readouterr().err
    assert s["status"] == "complete" and "cached" in s["teacher_logits"]
    assert err.count("warning: cannot write the teacher-logit cache") == 1
    assert len(list((tmp_path / "logits_cache").glob("*.safetensors"))) == 2  # identity and flip views
    assert files_of(teacher) == before
    # the next student reads that cache instead of running the teacher again
    s2 = train.main(make_config(args("--blocks=1", "--augment=flip", "--seed=1", f"--teacher_checkpoint={teacher}")))
    assert s2["status"] == "complete" and "warning" not in capsys.readouterr().err
