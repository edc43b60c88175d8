"""The second probe's defects, each pinned: run names stay inside out_dir, caches prove what they are
before they are used (else one line and a rebuild), run files are type-checked where they are read, an
unreachable Ray address is one line, full disks name their path, and two sweeps on one out_dir write
their tables one after the other."""
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import run_experiments
import train
from config import make_config
from data.dataset import load_dataset
from tests.test_reliability import one_line_exit
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--preset=smoke", "--max_train_samples=128", "--max_test_samples=64", "--epochs=1", "--augment=flip"]


# ----------------------------------------------------------------------------- run names

@pytest.mark.parametrize("name", ["../x", ".", "..", "/any/other/folder", "a/b"])
def test_a_run_name_never_leaves_out_dir(name, tmp_path, capsys):
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text('{"keep": true}')
    run_name = str(elsewhere) if name.startswith("/") else name
    err = one_line_exit(train.cli, SMALL + ["--method=ce", f"--out_dir={tmp_path}/runs", f"--run_name={run_name}"],
                        capsys)
    assert "--run_name" in err and "not a path" in err
    assert (elsewhere / "summary.json").read_text() == '{"keep": true}' and not (tmp_path / "runs").exists()


def test_fitnet_stage_takes_minus_one_or_an_index():
    with pytest.raises(UserError, match="-1 .* or a stage index"):
        make_config(["--fitnet_stage=-5"])
    assert make_config(["--fitnet_stage=-1"]).fitnet_stage == -1 and make_config(["--fitnet_stage=0"]).fitnet_stage == 0


# ----------------------------------------------------------------------------- the teacher-logits cache

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


# ----------------------------------------------------------------------------- the data cache

def test_a_wrong_shape_data_cache_is_one_line_then_rebuilt(tmp_path, capsys):
    from tests.fixtures import make_fashion_mnist_idx

    make_fashion_mnist_idx(tmp_path / "fashion-mnist")
    cfg = make_config(["--preset=smoke", f"--data_dir={tmp_path}"])
    before = load_dataset(cfg)
    cache = tmp_path / "cache" / "fashion-mnist-28px.safetensors"
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(cache), framework="pt") as f:
        meta = f.metadata()
    for spoil in ("channels", "labels"):
        t = load_file(str(cache))
        if spoil == "channels":
            t["train_images"] = t["train_images"][:, 0].contiguous()  # the channel dimension lost
        else:
            t["train_labels"] = t["train_labels"] + 100  # labels out of range
        save_file(t, str(cache), metadata=meta)
        capsys.readouterr()
        after = load_dataset(cfg)
        err = capsys.readouterr().err
        assert f"{cache}: " in err and "; rebuilding" in err, err
        assert torch.equal(after.train.images, before.train.images) and torch.equal(after.train.labels,
                                                                                    before.train.labels)


# ----------------------------------------------------------------------------- run files

def _finished_run(tmp_path) -> Path:
    out = tmp_path / "runs"
    train.main(make_config(SMALL, method="ce", out_dir=str(out)))
    return out / "fashion-mnist_res4_b64_fp32_ce_s0"


def test_a_wrong_typed_summary_is_left_out_of_table_and_plots_and_redone(tmp_path, capsys):
    import plot_experiment_results

    run = _finished_run(tmp_path)
    s = json.loads((run / "summary.json").read_text())
    s["best_test_acc"] = "high"
    (run / "summary.json").write_text(json.dumps(s))
    base = make_config(SMALL, out_dir=str(tmp_path / "runs"), sweep_blocks=(4,), sweep_methods=())
    capsys.readouterr()
    assert run_experiments.main(base) == 0  # the sweep redoes the run: its summary is whole again
    assert json.loads((run / "summary.json").read_text())["best_test_acc"] != "high"
    s["best_test_acc"] = "high"
    (run / "summary.json").write_text(json.dumps(s))
    other = tmp_path / "runs" / "copy"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps(dict(s, best_test_acc=80.0, run_name="copy")))
    (other / "history.json").write_text((run / "history.json").read_text())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        plot_experiment_results.cli([f"--out_dir={tmp_path}/runs"])
    assert e.value.code in (0, None)
    err = capsys.readouterr().err
    assert "'best_test_acc' is \"high\", not a number; left out of the plots" in err and "Traceback" not in err
    from utils.results import collect_results

    rows = collect_results(str(tmp_path / "runs"), [str(run), str(other)])
    assert [r["run_name"] for r in rows] == ["copy"]
    assert "left out of the table" in capsys.readouterr().err


@pytest.mark.parametrize("content, says", [("[1, 2]", "not a JSON object"),
                                            ('{"blocks": "four"}', "field blocks='four': expected int"),
                                            ('{"width": 1e30}', "field width=1e+30: expected int"),
                                            ('{"width": 1000000000000000000000000000000}', "field width=")])
def test_evaluate_names_the_config_file_at_fault(content, says, tmp_path, capsys):
    import evaluate

    run = _finished_run(tmp_path)
    saved = json.loads((run / "config.json").read_text())
    bad = json.loads(content)
    (run / "config.json").write_text(json.dumps(bad if isinstance(bad, list) else dict(saved, **bad)))
    err = one_line_exit(evaluate.cli, [f"--run={run}"], capsys)
    assert err.startswith(f"error: {run / 'config.json'}: ") and says in err, err


def test_a_resumed_finished_run_rewrites_a_torn_history(tmp_path, capsys):
    run = _finished_run(tmp_path)
    whole = json.loads((run / "history.json").read_text())
    (run / "history.json").write_text(json.dumps(whole)[:20])
    capsys.readouterr()
    train.main(make_config(SMALL, method="ce", out_dir=str(tmp_path / "runs"), resume=True))
    assert "rewritten from checkpoint.pt" in capsys.readouterr().err
    assert json.loads((run / "history.json").read_text()) == whole


# ----------------------------------------------------------------------------- the machine

@pytest.mark.slow
def test_an_unreachable_ray_address_is_one_line_within_a_minute(capsys):
    pytest.importorskip("ray")
    t0 = time.monotonic()
    err = one_line_exit(run_experiments.cli, SMALL + ["--launcher=ray", "--ray_address=127.0.0.1:1",
                                                      "--out_dir=/tmp/unused-ray-probe"], capsys)
    assert time.monotonic() - t0 < 60 and "--ray_address=127.0.0.1:1" in err and "no Ray cluster answers" in err


def test_a_full_disk_names_the_path(tmp_path):
    from utils.atomic import atomic_write_bytes

    disk = tmp_path / "tiny"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount here")
    try:
        with pytest.raises(OSError) as e:
            atomic_write_bytes(disk / "summary.json", b"x" * 1_000_000)
        assert e.value.filename == str(disk / "summary.json")
        assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ----------------------------------------------------------------------------- two sweeps, one table

@pytest.mark.slow
def test_two_sweeps_on_one_out_dir_never_leave_a_partial_table(tmp_path, monkeypatch):
    """Sweep B finishes its runs while sweep A is building its table: B's table must come after A's
    (the table lock), so the last results.md holds both sweeps' runs."""
    out = tmp_path / "shared"
    args = SMALL + ["--sweep_methods=[]", "--sweep_blocks=[4]", "--teacher_checkpoint=unused", f"--out_dir={out}"]
    real = run_experiments.results_text

    def slow_results_text(*a, **k):  # A's table is built from what is finished now: B is not yet
        texts = real(*a, **k)
        b = subprocess.Popen([sys.executable, "run_experiments.py", *args, "--first_seed=1"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = out / "fashion-mnist_res4_b64_fp32_ce_s1" / "summary.json"
        deadline = time.monotonic() + 120
        while not done.exists() and b.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        try:  # B's own table would be written now, were it not for A's lock
            b.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        slow_results_text.b = b
        return texts

    monkeypatch.setattr(run_experiments, "results_text", slow_results_text)
    assert run_experiments.main(make_config(args)) == 0
    assert slow_results_text.b.wait(timeout=120) == 0
    table = (out / "results.md").read_text()
    assert "2 runs" in table.splitlines()[0], table
