"""TensorBoard event files: every run's tb/ holds its epochs under the expected tags, a resumed run's stream
has each step once, and the sweep's hparams records read back."""
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import train
from config import make_config
from report.hparams import write_hparams
from runtime import training_run
from tests.fixtures import small_run_args
from utils.tensorboard import tag

SMALL = small_run_args(max_train_samples=256, max_test_samples=128, blocks=2, method="ce")


def events(path) -> EventAccumulator:
    ea = EventAccumulator(str(path))
    ea.Reload()
    return ea


def steps(ea, name) -> list:
    return [e.step for e in ea.Scalars(name)]


def test_tags_follow_the_history_keys():
    assert [tag(k) for k in ("train_loss", "val_acc", "test_loss", "train_kd", "lr", "images_per_second")] == \
        ["loss/train", "accuracy/val", "loss/test", "loss_terms/kd", "lr", "images_per_second"]


def test_every_epoch_is_logged_with_the_expected_tags(tmp_path):
    s = train.main(make_config(SMALL, epochs=3, val_fraction=0.01, out_dir=str(tmp_path)))
    ea = events(tmp_path / s["run_name"] / "tb")
    for name in ("loss/train", "accuracy/train", "accuracy/val", "loss/val", "lr", "images_per_second"):
        assert steps(ea, name) == [1, 2, 3], name
    # the test split is evaluated at the end only: the selected epoch and the last one
    assert steps(ea, "accuracy/test") == sorted({s["best_epoch"], 3})  # each step once
    assert ea.Scalars("accuracy/test")[-1].value == pytest.approx(s["final_test_acc"], abs=1e-4)


def test_tensorboard_false_writes_no_events(tmp_path):
    s = train.main(make_config(SMALL, epochs=1, tensorboard=False, out_dir=str(tmp_path)))
    assert not (tmp_path / s["run_name"] / "tb").exists()


class Interrupted(Exception):
    pass


def test_a_resumed_run_continues_the_stream_without_duplicate_steps(tmp_path, monkeypatch):
    args = dict(epochs=4, out_dir=str(tmp_path))
    real_end, real_save = training_run.TrainingRun.end_epoch, training_run.save_checkpoint

    def save_unless_epoch_3(path, state):  # the process dies after logging epoch 3, before its checkpoint
        if state["epoch"] != 2:
            real_save(path, state)

    def end_then_die(self, epoch, *a, **kw):
        real_end(self, epoch, *a, **kw)
        if epoch == 2:
            raise Interrupted

    monkeypatch.setattr(training_run, "save_checkpoint", save_unless_epoch_3)
    monkeypatch.setattr(training_run.TrainingRun, "end_epoch", end_then_die)
    with pytest.raises(Interrupted):
        train.main(make_config(SMALL, **args))
    monkeypatch.undo()
    s = train.main(make_config(SMALL, resume=True, **args))
    ea = events(tmp_path / s["run_name"] / "tb")
    assert steps(ea, "loss/train") == [1, 2, 3, 4]  # epoch 3 was logged twice; its first try is purged
    straight = train.main(make_config(SMALL, epochs=4, out_dir=str(tmp_path / "straight")))
    ref = events(tmp_path / "straight" / straight["run_name"] / "tb")
    assert [e.value for e in ea.Scalars("loss/train")] == pytest.approx([e.value for e in ref.Scalars("loss/train")])


def test_hparams_records_read_back(tmp_path):
    row = {"status": "complete", "role": "student", "run_name": "r", "method": "kd", "arch": "res4",
           "precision": "fp32", "seed": 1, "train_images": 500, "hparams": {"temperature": 2.0},
           "best_test_acc": 81.5, "best_val_acc": 82.0, "kd_gain": 1.25}
    write_hparams(str(tmp_path), [row, {**row, "run_name": "t", "role": "teacher"}])
    assert [p.name for p in (tmp_path / "tb_hparams").iterdir()] == ["r"]
    before = (tmp_path / "tb_hparams" / "r").stat().st_mtime_ns
    write_hparams(str(tmp_path), [row])  # unchanged: nothing rewritten
    assert (tmp_path / "tb_hparams" / "r").stat().st_mtime_ns == before
    ea = events(tmp_path / "tb_hparams" / "r")
    assert ea.Scalars("hparams/kd_gain")[0].value == pytest.approx(1.25)
    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["method"].string_value == "kd"
    assert start.hparams["kd.temperature"].number_value == 2.0
