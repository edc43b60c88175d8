"""Bad input and faults that need no training: each is one line (exit 2) or a warning, never a traceback
or a silent acceptance. The cases that train live in test_reliability_runs.py."""
import importlib
import os
import pickle
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from config import make_config
from data.dataset import load_dataset
from tests.fixtures import make_fashion_mnist_idx, make_imagefolder
from utils.checkpoint import load_state_dict_file
from utils.run_files import CorruptCheckpoint, load_checkpoint
from utils.errors import UserError, first_line

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train", "evaluate", "run_experiments", "plot_experiment_results")


def one_line_exit(cli, argv, capsys, code=2) -> str:
    """Run a script's cli in-process; assert it exits `code` with exactly one stderr line; return it."""
    capsys.readouterr()  # only what this call prints
    with pytest.raises(SystemExit) as e:
        cli(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- config ranges

@pytest.mark.parametrize("arg,why", [
    ("--temperature=-1", "> 0"), ("--temperature=0", "> 0"), ("--alpha=1.5", "[0, 1]"), ("--alpha=-0.1", "[0, 1]"),
    ("--dkd_beta=-1", "negative"), ("--dkd_alpha=-2", "negative"), ("--lr=-1", "> 0"), ("--lr=0", "> 0"),
    ("--lr=inf", "finite"), ("--lr=nan", "finite"), ("--temperature=inf", "finite"), ("--momentum=1.0", "[0, 1)"),
    ("--weight_decay=-0.1", "negative"), ("--max_train_samples=1", "at least 2"), ("--val_fraction=1.0", "[0, 1)")])
def test_every_hyper_parameter_has_its_range(arg, why):
    with pytest.raises(UserError) as e:
        make_config([arg])
    msg = str(e.value)
    assert msg.startswith(arg.split("=")[0]) and why in msg and "expected float" not in msg, msg


def test_ranges_are_checked_before_any_data_loads(tmp_path, capsys):
    import train

    err = one_line_exit(train.cli, ["--temperature=0", f"--data_dir={tmp_path}/nowhere", "--dataset=intel",
                                    f"--out_dir={tmp_path}/out"], capsys)
    assert "--temperature=0" in err and "nowhere" not in err
    assert not (tmp_path / "out").exists()


def test_edge_values_inside_the_ranges_are_accepted():
    cfg = make_config(["--alpha=0", "--temperature=0.5", "--lr=1e6", "--max_train_samples=2", "--momentum=0"])
    assert cfg.alpha == 0.0 and cfg.lr == 1e6 and make_config(["--alpha=1"]).alpha == 1.0


# ----------------------------------------------------------------------------- --help

@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_exits_0(script, flag, capsys):
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as e:
        module.cli([flag])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and err == ""
    assert module.__doc__.strip().splitlines()[0] in out  # the script's own command lines
    for needle in ("python train.py --role=teacher", "python run_experiments.py --preset=demo", "smoke", "demo",
                   "full", "docs/config.md"):
        assert needle in out, needle


# ----------------------------------------------------------------------------- weights and checkpoint files

class Payload:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture
def bad_files(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "good.pt")
    raw = (tmp_path / "good.pt").read_bytes()
    files = {"text": b"hello, this is a README\n", "empty": b"", "binary": bytes(range(1, 200)) * 5,
             "truncated": raw[:len(raw) // 2], "payload": pickle.dumps({"model": Payload()})}
    for name, data in files.items():
        (tmp_path / f"{name}.pt").write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name,needle", [
    ("text", "not a torch weights file (it holds text"), ("empty", "empty file (0 bytes)"),
    ("binary", "not a torch weights file (it holds binary data"),
    ("truncated", "damaged torch file (RuntimeError: PytorchStreamReader failed reading zip archive: failed "
                  "finding central directory)"),
    ("payload", "carries a pickle payload (it imports posix.system)")])
def test_bad_torch_files_say_what_they_are(bad_files, name, needle):
    for load, kind in ((load_state_dict_file, UserError), (load_checkpoint, CorruptCheckpoint)):
        with pytest.raises(UserError) as e:
            load(bad_files / f"{name}.pt")
        msg = str(e.value)
        assert needle in msg and "\n" not in msg, msg
        assert ("pickle payload" in msg) == (name == "payload")  # garbage is not called a payload
        # an unreadable checkpoint.pt lets the sweep start the run over; a payload is never "just corrupt"
        assert isinstance(e.value, kind) or name == "payload"


def test_torch_messages_are_cut_at_a_word_not_mid_word():
    words = ("PytorchStreamReader failed reading zip archive: failed finding central directory " * 5).split()
    line = first_line(RuntimeError(" ".join(words) + "\nsecond line"), 100)
    assert len(line) <= 100 and line.endswith("...")
    assert all(w in words for w in line[:-3].split())  # every word whole
    assert first_line(EOFError()) == "EOFError" and first_line(RuntimeError("\n ")) == "RuntimeError"


def test_text_teacher_checkpoint_is_one_line_not_a_key_error(tmp_path, capsys):
    import train

    data = make_fashion_mnist_idx(tmp_path / "data", n_train=40, n_test=20)
    text = tmp_path / "teacher.pt"
    text.write_text("not weights\n")
    err = one_line_exit(train.cli, ["--preset=smoke", f"--data_dir={data}", "--blocks=1",
                                    f"--teacher_checkpoint={text}", f"--out_dir={tmp_path}/out"], capsys)
    assert "teacher.pt: not a torch weights file" in err


def test_zero_byte_checkpoint_on_resume_is_one_line(tmp_path, capsys):
    import train

    data = make_fashion_mnist_idx(tmp_path / "data", n_train=40, n_test=20)
    run = tmp_path / "out" / "r"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    err = one_line_exit(train.cli, ["--preset=smoke", f"--data_dir={data}", "--blocks=1", "--method=ce",
                                    "--resume=True", "--run_name=r", f"--out_dir={tmp_path}/out"], capsys)
    assert "checkpoint.pt: empty file" in err


# ----------------------------------------------------------------------------- one process per run directory

HOLD = "import sys, time; from utils.lock import run_lock\nwith run_lock(sys.argv[1]):\n print('held', flush=True)\n" \
       " time.sleep(120)\n"


def test_second_process_exits_2_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path, capsys):
    import train
    from utils.lock import run_lock

    run = tmp_path / "out" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        err = one_line_exit(train.cli, ["--preset=smoke", "--blocks=1", "--run_name=busy",
                                        f"--out_dir={tmp_path}/out", f"--data_dir={tmp_path}/none"], capsys)
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


# ----------------------------------------------------------------------------- data folders

def test_test_split_missing_a_class_warns_naming_it(tmp_path, capsys):
    root = make_imagefolder(tmp_path, classes=("cat", "dog", "bird"), per_class=2, size=16)
    for p in (root / "test" / "bird").iterdir():
        p.unlink()
    (root / "test" / "bird").rmdir()
    d = load_dataset(make_config(dataset="imagefolder", data_dir=str(root), image_size=16))
    err = capsys.readouterr().err
    assert "warning:" in err and "['bird']" in err and "test" in err
    assert d.classes == ("bird", "cat", "dog") and sorted(set(d.test.labels.tolist())) == [1, 2]


def test_images_in_nested_subfolders_of_a_class_are_counted_in_a_warning(tmp_path, capsys):
    root = make_imagefolder(tmp_path, classes=("cat", "dog"), per_class=2, size=16)
    for rel in ("cat/more/a.jpg", "cat/more/b.jpg", "dog/x/y/c.png"):
        (root / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "train" / rel).write_bytes((root / "train" / "cat" / "img0.jpg").read_bytes())
    d = load_dataset(make_config(dataset="imagefolder", data_dir=str(root), image_size=16))
    err = capsys.readouterr().err
    assert "ignored 3 image file(s) in sub-folders" in err and "more" in err
    assert len(d.train) == 4  # still only the images directly in each class folder


# ----------------------------------------------------------------------------- files, layout, sizes

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


def test_narrow_strided_1x1_convolutions_train_in_nchw():
    from models.cnn_model import ResidualCNN
    from models.teacher_arch import seed12
    from utils.device import channels_last_trainable

    assert not channels_last_trainable(seed12(3, 6, width=4))  # the smoke teacher: Conv2d(4, 8, 1, stride=2)
    assert channels_last_trainable(seed12(3, 6, width=16)) and channels_last_trainable(ResidualCNN(10, 3, 6))


def test_image_size_below_what_the_student_strides_need_stops_before_data(tmp_path):
    import train
    from models.cnn_model import min_image_size

    assert [min_image_size(b) for b in (0, 2, 4, 6, 8, 10, 12)] == [8, 8, 8, 8, 9, 17, 33]
    for argv, needle in ((["--image_size=3"], "--image_size=3: too small"),
                         (["--image_size=16", "--blocks=10"], "needs at least 17 px"),
                         (["--blocks=12"], "native 28 px: too small for a res12")):
        with pytest.raises(UserError, match=needle):
            train.main(make_config(argv, data_dir=str(tmp_path / "none"), out_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
