"""A hostile user's probe of a run's life (issue 33), each defect pinned: --init_from names only a finished
fp32 student, damaged packed files and ptq.json rows are one line or a warning, an unwritable tb/ turns
TensorBoard off with a warning, a full disk inside torch.save is one line, a torn history never survives a
resume, a killed write's temp file is removed on resume, a zip-format pickle payload is named, a bad timm
name leaves no run folder, and every summary records its torch threads. Tiny idx data, 1-2 epochs."""
import json
import os
import signal
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import train
from config import make_config
from tests.fixtures import interrupt_after_first_epoch, make_fashion_mnist_idx
from tests.test_reliability_runs import one_line_exit, read_only
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RUN = "fashion-mnist_res1_b32_fp32_ce_s0"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fashion_mnist_idx(tmp_path_factory.mktemp("fmnist"), n_train=120, n_test=40)


def args(data, out, *extra) -> list:
    return ["--preset=smoke", f"--data_dir={data}", f"--out_dir={out}", "--batch_size=32", "--blocks=1",
            "--method=ce", *extra]


def interrupted_run(data, out, monkeypatch, *extra) -> Path:
    """A 2-epoch run stopped (as a kill would) in its second epoch: config.json, the first epoch's
    best_model.safetensors, history.json and checkpoint.pt, no summary.json."""
    with monkeypatch.context() as m:
        interrupt_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train.main(make_config(args(data, out, "--epochs=2", *extra)))
    run = out / RUN
    assert (run / "checkpoint.pt").exists() and not (run / "summary.json").exists()
    return run



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


# ----------------------------------------------------------------------------- 1. --init_from

def test_init_from_refuses_an_interrupted_a_failed_and_a_list_config_run(data, tmp_path, monkeypatch, capsys):
    from runtime.run_dir import check_init_from
    from utils.run_files import failed_summary, write_summary

    run = interrupted_run(data, tmp_path, monkeypatch)
    assert (run / "best_model.safetensors").exists()  # weights there, but the run never finished
    qat = lambda d: make_config(args(data, tmp_path / "q", "--qat=int4", f"--init_from={d}"))  # noqa: E731
    with pytest.raises(UserError, match="not a finished run") as e:
        check_init_from(qat(run))
    assert "--resume=True" in str(e.value)
    write_summary(run, failed_summary(error="RuntimeError: out of memory", run_name=RUN, role="student",
                                      dataset="fashion-mnist", blocks=1, arch="res1", precision="fp32",
                                      method="ce", seed=0))
    with pytest.raises(UserError, match="not a finished run .*failed: RuntimeError: out of memory"):
        check_init_from(qat(run))
    (run / "config.json").write_text("[1, 2, 3]")
    line, _ = one_line_exit(train.cli, args(data, tmp_path / "q", "--qat=int4", f"--init_from={run}"), capsys)
    assert f"{run / 'config.json'}: not a JSON object of config fields (found list)" in line, line
    assert not (tmp_path / "q").exists()  # refused before anything is written


# ----------------------------------------------------------------------------- 2. model.quant.safetensors

@pytest.mark.parametrize("packing,tensors", [
    ("{not json", {}), ('["conv.weight"]', {}), ('{"conv.weight": "int4"}', {}),
    ('{"conv.weight": {"codec": "int5", "shape": [2, 2]}}', {}),
    ('{"conv.weight": {"codec": "int4", "shape": "four"}}', {}),
    ('{"conv.weight": {"codec": "int4", "shape": [64, 64]}}', {}),  # more weights than the bytes hold
    ('{"conv.weight": {"codec": "int4"}}', {}),
    ('{"other.weight": {"codec": "int4", "shape": [2, 2]}}', {}),  # no such tensors in the file
    ('{"conv.weight": {"codec": "int4", "shape": [2, 2]}}', {"conv.weight.scale": torch.ones(3)})])
def test_damaged_packing_metadata_is_one_line_naming_the_file(tmp_path, packing, tensors):
    from quant.packing import unpack_state, weight_bits

    path = tmp_path / "model.quant.safetensors"
    save_file({"conv.weight.packed": torch.zeros(2, dtype=torch.uint8), "conv.weight.scale": torch.ones(2),
               "bn.bias": torch.zeros(2), **tensors}, str(path), metadata={"packing": packing})
    for read in (unpack_state, weight_bits):
        with pytest.raises(UserError) as e:
            read(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: damaged 'packing' metadata") and "\n" not in msg, msg


# ----------------------------------------------------------------------------- 3. ptq.json

def test_wrong_typed_ptq_rows_are_left_out_with_one_warning_and_the_table_is_written(tmp_path, capsys):
    from quant.table import qat_points, qat_table, read_ptq

    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    good = {"test_acc": 61.5, "bits_per_weight": 4.06, "packed_bytes": 900, "file_bytes": 1800}
    (fp32 / "ptq.json").write_text(json.dumps({
        "int4": good, "ternary": {**good, "test_acc": "high"}, "binary": {**good, "file_bytes": "big"},
        "int8": "not a row"}))
    student = {"status": "complete", "role": "student", "blocks": 2, "seed": 0, "precision": "fp32"}
    items = [({**student, "method": "kd", "best_test_acc": 70.0, "model_bytes": 9000}, str(fp32))] + [
        ({**student, "method": m, "qat": mode, "qat_test_acc": 65.0, "file_bytes": 1800, "bits_per_weight": 4.06},
         str(tmp_path / f"{m}_{mode}")) for m in ("ce", "kd") for mode in ("int4", "ternary", "binary")]
    capsys.readouterr()
    assert read_ptq(str(fp32)) == {"int4": good}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {fp32 / 'ptq.json'}: ") and "ternary" in err[0], err
    assert "binary" in err[0] and "int8" in err[0] and "left out" in err[0], err
    table = qat_table(*qat_points(items))  # raised TypeError on "big" / "high" before
    assert "| res2 | int4 | PTQ | 61.50 |" in table and "| res2 | ternary | PTQ |" not in table
    assert "| res2 | binary | QAT-KD |" in table


# ----------------------------------------------------------------------------- 4. tb/

@pytest.mark.parametrize("how", ["a file", "read-only"])
def test_an_unwritable_tb_folder_turns_tensorboard_off_with_one_warning(data, tmp_path, monkeypatch, capsys, how):
    run = interrupted_run(data, tmp_path, monkeypatch)
    tb = run / "tb"
    assert tb.is_dir()
    if how == "a file":
        for p in tb.iterdir():
            p.unlink()
        tb.rmdir()
        tb.write_text("not a folder")
    capsys.readouterr()
    resume = make_config(args(data, tmp_path, "--epochs=2", "--resume=True"))
    if how == "a file":
        s = train.main(resume)
    else:
        with read_only(tb):
            s = train.main(resume)
    err = capsys.readouterr().err
    assert s["status"] == "complete" and s["epochs_run"] == 2
    assert "Traceback" not in err and "Exception in thread" not in err, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and f"{tb}: cannot write TensorBoard events there" in warnings[0], err
    assert "TensorBoard is off for this run" in warnings[0]


# ----------------------------------------------------------------------------- 5. a full disk inside torch.save

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


def test_a_full_disk_during_training_is_one_line(data, tmp_path, capsys):
    with tiny_disk(tmp_path / "disk", "1m") as disk:
        line, _ = one_line_exit(train.cli, args(data, disk, "--blocks=4"), capsys)
        ckpt = disk / "fashion-mnist_res4_b32_fp32_ce_s0" / "checkpoint.pt"
        assert line.startswith(f"error: {ckpt}: No space left on device"), line


# ----------------------------------------------------------------------------- 6. a torn history, summary gone

def test_a_torn_history_without_a_summary_is_rewritten_from_the_checkpoint_on_resume(data, tmp_path, capsys):
    whole = train.main(make_config(args(data, tmp_path, "--epochs=2")))
    run = tmp_path / RUN
    history = json.loads((run / "history.json").read_text())
    (run / "summary.json").unlink()
    (run / "history.json").write_text(json.dumps(history)[:40])  # torn
    capsys.readouterr()
    again = train.main(make_config(args(data, tmp_path, "--epochs=2", "--resume=True")))
    assert f"{run / 'history.json'}: unreadable; rewritten from checkpoint.pt (2 epochs)" in capsys.readouterr().err
    assert again["status"] == "complete" and again["best_test_acc"] == whole["best_test_acc"]
    assert json.loads((run / "history.json").read_text()) == history


# ----------------------------------------------------------------------------- 7. a killed write's temp file

KILLED_WRITE = ("import sys, time; from utils.atomic import atomic_write_to\n"
                "def write(tmp):\n open(tmp, 'wb').write(b'half a file'); print('writing', flush=True); time.sleep(60)\n"
                "atomic_write_to(sys.argv[1], write)\n")


def test_a_killed_writes_temp_file_is_removed_when_the_run_resumes(data, tmp_path, monkeypatch, capsys):
    import fcntl

    run = interrupted_run(data, tmp_path, monkeypatch)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(run / "summary.json")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    stale = [p for p in run.iterdir() if p.name.startswith(".summary.json.") and p.name.endswith(".tmp")]
    assert len(stale) == 1 and stat.S_IMODE(stale[0].stat().st_mode) == 0o600  # mkstemp's, never chmod-ed
    (run / "notes.tmp").write_text("the user's")  # not the atomic writer's names: kept
    (run / ".notes.tmp").write_text("the user's")
    resume = make_config(args(data, tmp_path, "--epochs=2", "--resume=True"))
    fd = os.open(run / ".lock", os.O_RDWR)  # another process holds the run: nothing of it is touched
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="in use by"):
            train.main(resume)
    finally:
        os.close(fd)
    assert stale[0].exists()
    capsys.readouterr()
    assert train.main(resume)["status"] == "complete"
    assert not stale[0].exists() and (run / "notes.tmp").exists() and (run / ".notes.tmp").exists()
    assert f"removed 1 temp file(s) of an interrupted write ({stale[0].name})" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 8. a zip-format pickle payload

class Payload:
    def __reduce__(self):
        return (os.system, ("touch ran",))


def test_a_zip_format_pickle_payload_is_named_like_a_plain_one(tmp_path, monkeypatch):
    from utils.checkpoint import load_state_dict_file
    from utils.run_files import load_checkpoint

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "payload.pt"
    torch.save({"model": Payload()}, path)  # torch's zip format, data.pkl inside
    for load in (load_state_dict_file, load_checkpoint):
        with pytest.raises(UserError) as e:
            load(path)
        msg = str(e.value)
        assert msg == f"{path}: refused, the file carries a pickle payload (it imports posix.system) that " \
                      f"weights-only loading never runs", msg
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------- 9. a bad timm name

@pytest.mark.parametrize("flags", [["--student_arch=timm:nosuchnet"], ["--role=teacher", "--teacher_arch=timm:nosuchnet"]])
def test_a_bad_timm_name_is_one_line_and_leaves_no_run_folder(data, tmp_path, capsys, flags):
    out = tmp_path / "out"
    out.mkdir()
    line, _ = one_line_exit(train.cli, args(data, out, *flags), capsys)
    assert "timm:nosuchnet: no timm model of that name" in line, line
    assert os.listdir(out) == []  # no run folder holding only .lock


def test_a_run_that_fails_before_writing_leaves_no_run_folder(data, tmp_path, capsys):
    out = tmp_path / "out"
    text = tmp_path / "teacher.pt"
    text.write_text("not weights\n")
    line, _ = one_line_exit(train.cli, args(data, out, "--method=kd", f"--teacher_checkpoint={text}"), capsys)
    assert "teacher.pt: not a torch weights file" in line
    assert os.listdir(out) == []


# ----------------------------------------------------------------------------- 10. threads

def test_every_summary_records_its_torch_threads(data, tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        s = train.main(make_config(args(data, tmp_path)))
    finally:
        torch.set_num_threads(before)
    assert s["threads"] == 1 and json.loads((tmp_path / RUN / "summary.json").read_text())["threads"] == 1
    keys = list(s)
    assert keys.index("threads") == keys.index("hardware") + 1


def test_ray_student_tasks_default_to_a_local_runs_threads():
    from runtime.ray_sweep import task_cpus

    # cpus_per_task=0 (the default): not set by the user
    unset, local = make_config(["--launcher=ray"]), torch.get_num_threads()
    assert task_cpus(unset, "student", most_cpus=64) == local  # what a local sweep's runs use
    assert task_cpus(unset, "student", most_cpus=1) == 1  # never more than a node has
    assert task_cpus(make_config(["--launcher=ray", "--cpus_per_task=3"]), "student", most_cpus=64) == 3  # the user's
    assert task_cpus(unset, "teacher", most_cpus=64) == 64  # the teacher alone on the largest node, as before


def test_a_table_of_runs_with_different_thread_counts_says_so(monkeypatch):
    import utils.results as results
    from config import make_config as cfg_of

    monkeypatch.setattr(results, "markdown_table", lambda rows, seeds: "")
    row = {"role": "student", "status": "complete", "hardware": "AMD EPYC", "selected_on": "val", "threads": 2}
    same = results.results_text("out", [row, dict(row)], cfg_of())[1]
    mixed = results.results_text("out", [row, dict(row, threads=1)], cfg_of())[1]
    assert "thread counts" not in same
    assert "different torch thread counts (1, 2;" in mixed
