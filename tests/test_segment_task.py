"""--task=segment from the command line to the run files: the rules that refuse what a segmentation cannot take
(one line, exit 2), the scenes loaded and cached, masks augmented with their images, and a teacher, a CE
control, pixel-wise KD and CWD trained, selected on validation mIoU and evaluated, on tiny scenes of the
session's small Fashion-MNIST files."""
import json

import pytest
import torch

import evaluate
import train
from config import make_config
from data.dataset import load_dataset, pixel_labels
from data.sampler import BatchSampler
from data.scenes import GARMENT_THRESHOLD
from tests.fixtures import one_line_exit, small_run_args

SEG = ("--task=segment", "--dataset=fashion-mnist-scenes", "--scene_count=96", "--scene_test_count=32",
       "--scene_canvas=[32,40]", "--val_fraction=0.25", "--batch_size=24", "--epochs=2", "--tensorboard=False")
TEACHER = "--teacher_arch=resseg2_8"


def seg_args(data, out, *flags):
    return small_run_args(data, out, *SEG, *flags)


@pytest.mark.parametrize("flags, start", [
    (("--task=segment",), "--dataset=fashion-mnist with --task=segment: its labels are one class per image"),
    (("--dataset=fashion-mnist-scenes",), "--dataset=fashion-mnist-scenes with --task=classify: its labels are masks"),
    (SEG + ("--method=kd",), "--teacher_arch=seed12 with --task=segment: a segmentation teacher is a resseg"),
    (SEG + ("--method=dkd", TEACHER), "--method=dkd with --task=segment: it distills one class per image; use ce, kd"),
    (SEG + ("--method=kd", TEACHER, "--mixup=0.2"), "--mixup=0.2 with --task=segment"),
    (SEG + ("--method=ce", "--qat=int8", "--precision=fp32"), "--task=segment: quantization-aware training"),
    (SEG + ("--method=ce", "--sweep_train_samples=[50,0]"), "--sweep_train_samples=(50, 0) with --task=segment"),
    (("--method=kd", TEACHER), "--teacher_arch=resseg2_8 with --task=classify: resseg models label pixels"),
])
def test_what_a_segmentation_cannot_take_is_one_line(flags, start, capsys):
    line, _ = one_line_exit(train.cli, ["--preset=smoke", *flags], capsys)
    assert start in line, line


def test_scenes_load_cached_with_a_hold_out_of_other_garments(fashion_idx, tmp_path):
    cfg = make_config(seg_args(fashion_idx, tmp_path, "--method=ce"))
    ds = load_dataset(cfg)
    assert tuple(ds.train.images.shape) == (72, 1, 32, 40) and ds.train.images.dtype == torch.uint8
    assert tuple(ds.train.labels.shape) == (72, 32, 40) and ds.train.labels.dtype == torch.uint8
    assert len(ds.val) == 24 and len(ds.test) == 32 and ds.num_classes == 11 and ds.classes[0] == "background"
    for split in (ds.train, ds.val, ds.test):  # a mask labels exactly the garment pixels
        assert torch.equal(split.labels > 0, split.images[:, 0] > GARMENT_THRESHOLD)
    again = load_dataset(cfg)  # from the cache file, the same bytes
    assert torch.equal(again.train.images, ds.train.images) and torch.equal(again.val.labels, ds.val.labels)
    sub = load_dataset(make_config(seg_args(fashion_idx, tmp_path, "--method=ce", "--max_train_samples=10")))
    assert len(sub.train) == 10 and len(sub.val) == 24


def test_masks_are_flipped_and_cropped_with_their_images(fashion_idx, tmp_path):
    ds = load_dataset(make_config(seg_args(fashion_idx, tmp_path, "--method=ce")))
    sampler = BatchSampler(ds.train, 24, "crop+flip", (0.0,), (1.0,), False, torch.Generator().manual_seed(0))
    batches = list(sampler.epoch())
    assert sum(bool(b.flips.any()) for b in batches) > 0
    for b in batches:
        assert b.y.dtype == torch.int64 and tuple(b.y.shape) == (24, 32, 40)
        assert torch.equal(b.y > 0, b.x[:, 0] * 255 > GARMENT_THRESHOLD + 0.5)  # the same flip and crop
    masks = torch.tensor([[[0, 3], [255, 10]]], dtype=torch.uint8)
    assert pixel_labels(masks).tolist() == [[[0, 3], [-1, 10]]]  # a pixel without a label: -1


def test_teacher_ce_kd_and_cwd_train_select_on_miou_and_evaluate(fashion_idx, tmp_path, capsys):
    teacher = train.main(make_config(seg_args(fashion_idx, tmp_path, "--role=teacher", TEACHER)))
    assert teacher["task"] == "segment" and teacher["arch"] == "resseg2_8"
    runs = {}
    for method in ("ce", "kd", "cwd"):
        runs[method] = s = train.main(make_config(seg_args(fashion_idx, tmp_path, f"--method={method}", "--blocks=2",
                                                           TEACHER, "--teacher_logits=cache")))
        assert s["status"] == "complete" and s["method"] == method and s["model"] == "residual segmenter res2 (student)"
        assert 0 <= s["test_miou"] <= 100 and 0 <= s["best_test_acc"] <= 100 and len(s["test_iou"]) == 11
        assert s["selected_on"] == "val" and s["best_val_miou"] is not None and s["test_ece"] is None
        history = json.loads((tmp_path / s["run_name"] / "history.json").read_text())
        judged = [r for r in history if "val_miou" in r]
        assert judged and s["best_val_miou"] == max(r["val_miou"] for r in judged)  # selected on val mIoU
    assert runs["kd"]["teacher_logits"].startswith("online") and "too big to cache" in runs["kd"]["teacher_logits"]
    assert {"train_ce", "train_kd"} <= set(json.loads((tmp_path / runs["kd"]["run_name"] / "history.json")
                                                      .read_text())[0])
    assert runs["cwd"]["hparams"] == {"cwd_weight": 3.0, "cwd_temperature": 4.0}
    run = tmp_path / runs["kd"]["run_name"]
    capsys.readouterr()
    evaluate.cli([f"--run={run}"])
    assert "test mIoU" in capsys.readouterr().out
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["task"] == "segment" and ev["miou"] == pytest.approx(runs["kd"]["test_miou"])
    assert (run / "segmentation_examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for flag in ("--split=pred", "--exit=1"):  # (--deploy=True measures its variants: tests/test_segment_deploy.py)
        line, _ = one_line_exit(evaluate.cli, [f"--run={run}", flag], capsys)
        assert "a segmentation run is evaluated on its test scenes only" in line, flag


def test_tune_refuses_a_segmentation_for_now(capsys):
    import tune
    flags = ["--preset=smoke", *SEG, "--method=ce"]
    line, _ = one_line_exit(tune.cli, flags, capsys)
    assert "tune.py searches classifiers' settings only so far" in line
