"""Weights and checkpoint files that are not what they claim: text, an empty file, other binary data, a
truncated zip or a pickle payload (plain or in torch's zip format) is one line saying what it is, as a
user's weights, a teacher checkpoint or a checkpoint.pt to resume; torch's own messages are cut at a word."""
import os
import pickle

import pytest
import torch

from tests.fixtures import make_fashion_mnist_idx, one_line_exit, small_run_args
from utils.checkpoint import load_state_dict_file
from utils.errors import UserError, first_line
from utils.run_files import CorruptCheckpoint, load_checkpoint


class Payload:
    """Pickled, it runs `command` when unpickled: what weights-only loading must never do."""

    def __init__(self, command: str = "true"):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


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


def test_a_zip_format_pickle_payload_is_named_like_a_plain_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "payload.pt"
    torch.save({"model": Payload("touch ran")}, path)  # torch's zip format, data.pkl inside
    for load in (load_state_dict_file, load_checkpoint):
        with pytest.raises(UserError) as e:
            load(path)
        msg = str(e.value)
        assert msg == f"{path}: refused, the file carries a pickle payload (it imports posix.system) that " \
                      f"weights-only loading never runs", msg
    assert not (tmp_path / "ran").exists()


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
    err, _ = one_line_exit(train.cli, small_run_args(data, f"{tmp_path}/out", "--blocks=1",
                                                     f"--teacher_checkpoint={text}"), capsys)
    assert "teacher.pt: not a torch weights file" in err


def test_zero_byte_checkpoint_on_resume_is_one_line(tmp_path, capsys):
    import train

    data = make_fashion_mnist_idx(tmp_path / "data", n_train=40, n_test=20)
    run = tmp_path / "out" / "r"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    err, _ = one_line_exit(train.cli, small_run_args(data, f"{tmp_path}/out", "--blocks=1", "--method=ce",
                                                     "--resume=True", "--run_name=r"), capsys)
    assert "checkpoint.pt: empty file" in err
