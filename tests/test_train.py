"""train.py end to end on real files: outputs, determinism, resume after SIGKILL, bad input, frozen teacher,
validation splits, and a learning rate that makes the loss explode."""
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch

import train
from config import make_config
from tests.fixtures import make_intel_folder, run_script, small_run_args
from utils.checkpoint import load_state_dict_file
from utils.errors import UserError
from utils.run_files import COMPLETE_KEYS, GENERATION, QAT_KEYS, SEGMENT_KEYS, TEACHER_KEYS

ROOT = Path(__file__).resolve().parents[1]
SMALL = small_run_args(max_train_samples=512, max_test_samples=256, epochs=2)


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    train.main(make_config(SMALL, role="teacher", out_dir=str(out)))
    return out


def test_teacher_run_files(teacher_dir):
    run = teacher_dir / "fashion-mnist_teacher_seed12"
    for name in ("model.safetensors", "best_model.safetensors", "checkpoint.pt", "history.json",
                 "config.json", "training_summary.txt", "summary.json"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds"} <= set(history[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["role"] == "teacher"
    # utils/run_files.py's schema: the version first, then every declared key (no teacher's: it has none)
    absent = TEACHER_KEYS + QAT_KEYS + SEGMENT_KEYS + (GENERATION,)  # a classifier's teacher run
    assert list(summary) == ["schema", *(k for k in COMPLETE_KEYS if k not in absent)]
    assert summary["best_test_acc"] == max(h["test_acc"] for h in history)
    assert summary["model_bytes"] == os.path.getsize(run / "model.safetensors")
    text = (run / "training_summary.txt").read_text()
    for label in ("Model Architecture:", "Residual Blocks:", "Fully Connected Layers:", "Trainable Parameters:",
                  "Training Time:", "Hardware Used:", "Batch Size:", "Learning Rate:", "Epochs:",
                  "Best Test Accuracy:", "Early Stopping:", "Stopped at epoch:", "Precision:"):
        assert label in text


def test_kd_student_teacher_stays_frozen(teacher_dir):
    teacher_weights = teacher_dir / "fashion-mnist_teacher_seed12" / "best_model.safetensors"
    before = load_state_dict_file(teacher_weights)
    s = train.main(make_config(SMALL, blocks=2, method="kd", augment="flip", out_dir=str(teacher_dir)))
    after = load_state_dict_file(teacher_weights)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert s["teacher_acc"] is not None and s["method"] == "kd" and "cached" in s["teacher_logits"]
    assert list(s) == ["schema", *(k for k in COMPLETE_KEYS if k not in QAT_KEYS + SEGMENT_KEYS + (GENERATION,))]  # the teacher's too
    assert list((teacher_dir / "fashion-mnist_teacher_seed12" / "logits_cache").glob("*.safetensors"))
    # dkd and online logits run through the same loop
    s2 = train.main(make_config(SMALL, blocks=2, method="dkd", teacher_logits="online", epochs=1,
                                out_dir=str(teacher_dir)))
    assert s2["teacher_logits"].startswith("online") and s2["status"] == "complete"


def test_bf16_teacher_logits_are_cached_apart_and_close_to_fp32(teacher_dir):
    from runtime.teacher import cached_teacher_logits, load_frozen_teacher
    from data.dataset import Split

    cfg = make_config(SMALL, blocks=2, out_dir=str(teacher_dir))
    teacher, info = load_frozen_teacher(cfg, 1, 10, "cpu")
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g), torch.zeros(64).long())
    fp32 = cached_teacher_logits(cfg, teacher, info, data, (0.3,), (0.35,))["identity"]
    bf16_cfg = make_config(SMALL, blocks=2, out_dir=str(teacher_dir), teacher_precision="bf16")
    bf16 = cached_teacher_logits(bf16_cfg, teacher, info, data, (0.3,), (0.35,))["identity"]
    assert not torch.equal(fp32, bf16)  # really computed in bf16, not read from the fp32 cache entry
    assert torch.allclose(fp32, bf16, atol=0.05 * fp32.abs().max().item() + 1e-3)
    assert torch.equal(bf16, cached_teacher_logits(bf16_cfg, teacher, info, data, (0.3,), (0.35,))["identity"])
    s = train.main(make_config(SMALL, blocks=2, epochs=1, teacher_precision="bf16", out_dir=str(teacher_dir),
                               run_name="bf16_teacher"))  # not the fp32 kd run's directory: that one is finished
    assert "teacher forward in bf16" in s["teacher_logits"] and s["status"] == "complete"


def test_same_seed_same_history_bit_for_bit(tmp_path):
    keys = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
    runs = []
    for i in range(2):
        train.main(make_config(SMALL, blocks=2, method="ce", out_dir=str(tmp_path / str(i))))
        h = json.loads((tmp_path / str(i) / "fashion-mnist_res2_b64_fp32_ce_s0" / "history.json").read_text())
        runs.append([[row[k] for k in keys] for row in h])
    assert runs[0] == runs[1]
    train.main(make_config(SMALL, blocks=2, method="ce", seed=1, out_dir=str(tmp_path / "2")))
    h = json.loads((tmp_path / "2" / "fashion-mnist_res2_b64_fp32_ce_s1" / "history.json").read_text())
    assert [[row[k] for k in keys] for row in h] != runs[0]


@pytest.mark.slow
def test_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    args = SMALL + ["--blocks=3", "--method=ce", "--epochs=4", "--max_train_samples=2048", f"--out_dir={tmp_path}/a",
                    "--checkpoint_seconds=0"]  # a checkpoint after every epoch: killed in the next one
    run = tmp_path / "a" / "fashion-mnist_res3_b64_fp32_ce_s0"
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    r = run_cli(*args, "--resume=True")
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch" in r.stdout
    resumed = json.loads((run / "history.json").read_text())
    r = run_cli(*[a.replace(f"{tmp_path}/a", f"{tmp_path}/b") for a in args])
    assert r.returncode == 0, r.stderr
    straight = json.loads((tmp_path / "b" / run.name / "history.json").read_text())
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in straight]


def test_checkpoint_waits_for_checkpoint_seconds_but_the_last_epoch_always_writes(tmp_path):
    seen = []  # after each epoch: is there a checkpoint.pt yet?
    train.main(make_config(SMALL, method="ce", epochs=3, checkpoint_seconds=3600.0, out_dir=str(tmp_path)),
               on_epoch=lambda run, row: seen.append(os.path.exists(run.ckpt_path)))
    assert seen == [False, False, True]
    every = []
    train.main(make_config(SMALL, method="ce", epochs=2, checkpoint_seconds=0.0, out_dir=str(tmp_path / "every")),
               on_epoch=lambda run, row: every.append(json.loads(open(os.path.join(run.dir, "history.json")).read())))
    assert [len(h) for h in every] == [1, 2]


@pytest.fixture(scope="module")
def intel_dir(tmp_path_factory):
    return make_intel_folder(tmp_path_factory.mktemp("intel"), per_class=2, odd=True)


def test_odd_intel_folder_trains_one_epoch_naming_the_corrupt_file(intel_dir, tmp_path):
    data = tmp_path / "intel"  # without the module's decoded cache, which would skip the decoding that warns
    shutil.copytree(intel_dir, data, ignore=shutil.ignore_patterns("cache"))
    r = run_script("train.py", "--dataset=intel", f"--data_dir={data}", "--role=student", "--method=ce", "--blocks=2",
                "--epochs=1", "--batch_size=4", f"--out_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "broken.jpg" in r.stderr and "skipped 1" in r.stderr
    summary = json.loads((tmp_path / "intel_res2_b4_fp32_ce_s0" / "summary.json").read_text())
    assert summary["image_size"] == 150 and summary["in_channels"] == 3 and summary["num_classes"] == 6


@pytest.mark.parametrize("role,blocks,fc,expected", [
    ("student", 4, "[32]", "98,294"), ("student", 6, "[64]", "408,854"), ("student", 8, "[128]", "1,648,470"),
    ("student", 10, "[256]", "6,601,686"), ("teacher", 4, "None", "26,534,358")])
def test_original_parameter_counts_from_training_summary(intel_dir, tmp_path, role, blocks, fc, expected):
    # the original coursework repo's counts, read from real runs on an Intel-shaped folder (3x150x150, 6 classes)
    train.main(make_config(dataset="intel", data_dir=str(intel_dir), role=role, blocks=blocks, method="ce",
                           fc_layers=None if fc == "None" else json.loads(fc), epochs=1, batch_size=6,
                           max_train_samples=6, max_test_samples=6, out_dir=str(tmp_path)))
    text = next(tmp_path.glob("*/training_summary.txt")).read_text()
    assert re.search(rf"^Trainable Parameters: {expected}$", text, re.M), text


def test_missing_data_dir_exits_2_naming_it(tmp_path):
    r = run_script("train.py", "--dataset=intel", f"--data_dir={tmp_path}/nowhere", f"--out_dir={tmp_path}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "Traceback" not in r.stderr


class Payload:
    """Unpickling this runs `touch <marker>`: the file appears only if a loader executed the payload."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_teacher_with_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "teacher.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": Payload(marker)}, f)
    r = run_script("train.py", *SMALL, "--blocks=2", f"--teacher_checkpoint={evil}", f"--out_dir={tmp_path}")
    assert r.returncode == 2, r.stderr
    assert "refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_missing_teacher_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="train one first"):
        train.main(make_config(SMALL, blocks=2, method="kd", out_dir=str(tmp_path)))


def test_val_fraction_selects_on_validation(tmp_path):
    s = train.main(make_config(SMALL, blocks=2, method="ce", val_fraction=0.01, out_dir=str(tmp_path)))
    assert s["selected_on"] == "val" and s["best_val_acc"] is not None
    history = json.loads((tmp_path / s["run_name"] / "history.json").read_text())
    best = max(history, key=lambda h: h["val_acc"])  # the first epoch of the best val accuracy
    assert s["best_epoch"] == best["epoch"] and s["best_test_acc"] == best["test_acc"]
    # val is 1% of the whole train split, carved out first and the same for every run; the run's
    # 512 training images come from the rest
    assert s["val_images"] == 600 and s["train_images"] == 512


def test_val_fraction_leaving_no_training_images_is_one_line(fashion_idx, tmp_path):
    with pytest.raises(UserError, match="0 of 120 training image.* at least 2 are needed"):
        train.main(make_config(small_run_args(fashion_idx, tmp_path, "--blocks=1", "--method=ce",
                                              "--val_fraction=0.999", batch_size=32)))


def test_exploding_loss_warns_about_the_learning_rate(fashion_idx, tmp_path, capsys):
    args = partial(small_run_args, fashion_idx, tmp_path, "--blocks=1", "--method=ce", batch_size=32)
    s = train.main(make_config(args("--lr=1e6")))
    err = capsys.readouterr().err
    assert s["warnings"] and "--lr=1e+06 is probably too high" in s["warnings"][0]
    assert "warning:" in err and "training loss grew" in err
    calm = train.main(make_config(args("--run_name=calm")))
    assert calm["warnings"] == []


def test_select_from_skips_the_early_evaluations_and_picks_among_the_rest(tmp_path):
    common = dict(blocks=2, method="ce", val_fraction=0.01, epochs=5, max_train_samples=256)
    s = train.main(make_config(SMALL, select_from=0.4, out_dir=str(tmp_path / "late"), **common))
    history = json.loads((tmp_path / "late" / s["run_name"] / "history.json").read_text())
    assert ["val_acc" in h for h in history] == [False, False, True, True, True]
    assert s["selected_from_epoch"] == 3 and s["best_epoch"] >= 3
    best = max(history[2:], key=lambda h: h["val_acc"])
    assert s["best_epoch"] == best["epoch"] and s["best_test_acc"] == best["test_acc"]
    assert "from epoch 3" in (tmp_path / "late" / s["run_name"] / "training_summary.txt").read_text()
    # evaluating fewer epochs changes nothing else: the same seed trains the same weights
    every = train.main(make_config(SMALL, out_dir=str(tmp_path / "every"), **common))
    assert every["final_test_acc"] == s["final_test_acc"]
    with pytest.raises(UserError, match="select_from"):
        make_config(select_from=1.0)


def test_validation_images_are_never_trained_on():
    from data.dataset import load_dataset

    def keys(split):
        return {bytes(img.numpy().tobytes()) for img in split.images}

    a = load_dataset(make_config(val_fraction=0.01, seed=0))
    b = load_dataset(make_config(val_fraction=0.01, seed=3, max_train_samples=5000))
    assert torch.equal(a.val.images, b.val.images)  # one hold-out for every run and seed
    assert not keys(a.val) & keys(b.train) and len(a.train) == 60000 - 600


def test_bf16_conv_output_really_is_bf16():
    from models.cnn_model import ResidualCNN
    from utils.precision import setup_precision

    model = ResidualCNN(2, 1, 10)
    seen = []
    model.stem[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        prec = setup_precision(name, model, torch.device("cpu"))
        with prec.autocast():
            model(torch.randn(2, 1, 28, 28))
        assert seen[-1] == dtype, name
