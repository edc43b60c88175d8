"""The run files' one owner (utils/run_files.py): summary.json and checkpoint.pt carry the schema, a file
without it reads as schema 1, one of another schema is refused with one line, and the writers keep to the
declared keys. Cheap: no training."""
import json

import pytest
import torch

from config import make_config, run_dir_of
from report.results import collect_results
from sweep.launch import record_failure
from utils.errors import UserError
from utils.run_files import (CHECKPOINT_KEYS, FAILED_KEYS, SCHEMA, SUMMARY, CorruptCheckpoint, complete_summary,
                             failed_summary, load_checkpoint, load_summary, read_history, read_summary, save_checkpoint,
                             write_history, write_summary)

DONE = {"status": "complete", "run_name": "r", "role": "teacher", "best_test_acc": 90.0}


def test_a_summary_is_stamped_with_the_schema_first(tmp_path):
    write_summary(tmp_path, dict(DONE))
    text = json.loads((tmp_path / SUMMARY).read_text())
    assert list(text)[0] == "schema" and text["schema"] == SCHEMA == 1
    assert read_summary(tmp_path) == text


def test_a_summary_without_the_key_is_schema_1(tmp_path):
    (tmp_path / SUMMARY).write_text(json.dumps(DONE))
    assert read_summary(tmp_path) == DONE


@pytest.mark.parametrize("schema", [2, "1", True, None])
def test_another_schema_is_refused_with_one_line(tmp_path, capsys, schema):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / SUMMARY).write_text(json.dumps({"schema": schema, **DONE}))
    summary, why = load_summary(tmp_path / "run")
    assert summary is not None and "written by another version of this project" in why and "\n" not in why
    assert read_summary(tmp_path / "run") is None  # the run counts as unfinished
    assert collect_results(str(tmp_path), [str(tmp_path / "run")]) == []
    assert "left out of the table" in capsys.readouterr().err


def test_the_summary_builders_keep_to_the_declared_keys():
    failed = failed_summary(error="E", run_name="r", role="student", dataset="d", blocks=4, arch="res4",
                            precision="fp32", method="kd", seed=0)
    assert list(failed) == ["schema", *(k for k in FAILED_KEYS if k != "qat")]  # qat: a QAT run's only
    with pytest.raises(ValueError, match="missing"):
        complete_summary(DONE)
    with pytest.raises(ValueError, match="unknown"):
        failed_summary(error="E", run_name="r", role="student", dataset="d", blocks=4, arch="res4",
                       precision="fp32", method="kd", seed=0, extra=1)


def test_the_sweeps_failure_record_goes_through_the_owner(tmp_path):
    cfg = make_config(out_dir=str(tmp_path), blocks=4, method="kd")
    record_failure(cfg, RuntimeError("boom"))
    summary = read_summary(run_dir_of(cfg))
    assert list(summary) == ["schema", *(k for k in FAILED_KEYS if k != "qat")] and summary["error"] == "RuntimeError: boom"


def test_history_rows_keep_their_keys(tmp_path):
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 50.0, "lr": 0.1, "epoch_seconds": 1.0,
           "images_per_second": 10.0}
    write_history(tmp_path, [row])
    assert read_history(tmp_path) == [row]
    with pytest.raises(ValueError, match="train_acc"):
        write_history(tmp_path, [{k: v for k, v in row.items() if k != "train_acc"}])
    (tmp_path / "history.json").write_text('[{"epo')
    assert read_history(tmp_path) is None


def test_a_checkpoint_carries_the_schema_and_every_key(tmp_path):
    state = {k: {} for k in CHECKPOINT_KEYS} | {"epoch": 0, "history": [], "elapsed_seconds": 0.0}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    assert load_checkpoint(path) == {"schema": SCHEMA, **state}
    with pytest.raises(ValueError):
        save_checkpoint(path, {k: v for k, v in state.items() if k != "trainable"})
    # no legacy fallback: a checkpoint without the method's trainable state is not one this project reads
    torch.save({k: v for k, v in state.items() if k != "trainable"}, path)
    with pytest.raises(CorruptCheckpoint, match="no trainable"):
        load_checkpoint(path)
    torch.save({**state, "schema": 2}, path)
    with pytest.raises(UserError, match="schema 2, not 1") as e:
        load_checkpoint(path)
    assert not isinstance(e.value, CorruptCheckpoint)  # never "just corrupt": the sweep would start it over
    torch.save(state, path)  # without the key: schema 1
    assert load_checkpoint(path) == state
