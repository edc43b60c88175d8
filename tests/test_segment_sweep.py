"""A segmentation sweep: the teacher, then per depth and seed a CE control, pixel-wise KD and CWD on tiny scenes;
its table ranks and pairs mIoU (not pixel accuracy), its picture shows teacher, distilled student and control, and
plot_experiment_results draws its mIoU curves."""
import json

import pytest

import plot_experiment_results
import run_experiments
from config import make_config
from report.results import ce_controls, kd_gain, score, selection_acc
from tests.test_segment_task import seg_args


def seg_summary(method: str, miou: float, pixel_acc: float, val_miou: float = None, seed: int = 0) -> dict:
    return {"role": "student", "method": method, "status": "complete", "blocks": 4, "seed": seed,
            "precision": "fp32", "task": "segment", "test_miou": miou, "best_test_acc": pixel_acc,
            "final_test_miou": miou - 1, "final_test_acc": pixel_acc, "best_val_miou": val_miou,
            "best_val_acc": 99.0}


def test_a_segmentation_is_compared_by_miou_not_pixel_accuracy():
    control, kd = seg_summary("ce", 40.0, 95.0, 41.0), seg_summary("kd", 43.5, 94.0, 45.0)
    assert score(kd) == 43.5 and score(kd, "last") == 42.5 and selection_acc(kd) == 45.0
    # pixel accuracy fell by a point, mIoU rose by 3.5: the gain is mIoU's
    assert kd_gain(kd, ce_controls([control, kd])) == pytest.approx(3.5)
    classify = {"role": "student", "method": "kd", "status": "complete", "blocks": 4, "seed": 0,
                "precision": "fp32", "best_test_acc": 80.0, "best_val_acc": 81.0}
    assert score(classify) == 80.0 and selection_acc(classify) == 81.0


def test_a_segmentation_sweep_tables_miou_and_draws_its_examples(fashion_idx, tmp_path, capsys):
    argv = seg_args(fashion_idx, tmp_path, "--teacher_arch=resseg2_8", "--sweep_blocks=[2]",
                    "--sweep_methods=[kd,cwd]", "--seeds=2", "--sweep_precisions=[fp32]", "--epochs=1")
    assert run_experiments.main(make_config(argv)) == 0
    md = (tmp_path / "results.md").read_text()
    assert "Mean IoU in percent over every class, background included" in md
    assert "test mIoU % at the selected epoch" in md and "test acc %" not in md
    rows = {}
    for d in tmp_path.iterdir():
        s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else None
        if s and s["role"] == "student":
            rows[(s["method"], s["seed"])] = s
    assert len(rows) == 6 and all(s["teacher_miou"] is not None for m, s in rows.items() if m[0] != "ce")
    gain = rows[("kd", 1)]["test_miou"] - rows[("ce", 1)]["test_miou"]  # the table's gain is mIoU's, per seed
    assert f"{gain:+.2f}" in md
    picture = tmp_path / "plots" / "segmentation_examples.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert plot_experiment_results.main(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "accuracy_curves.png" in out and "skipped confusion_matrix_best_student.png" in out


def test_a_killed_segmentation_run_resumes_to_the_same_weights_and_scores(fashion_idx, tmp_path, monkeypatch):
    import hashlib

    import train
    from tests.fixtures import interrupt_after_first_epoch

    train.main(make_config(seg_args(fashion_idx, tmp_path, "--role=teacher", "--teacher_arch=resseg2_8")))
    student = ("--method=cwd", "--blocks=2", "--teacher_arch=resseg2_8", "--epochs=3")
    whole = train.main(make_config(seg_args(fashion_idx, tmp_path, *student, "--run_name=whole")))
    with monkeypatch.context() as m:
        interrupt_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            train.main(make_config(seg_args(fashion_idx, tmp_path, *student, "--run_name=cut")))
    assert not (tmp_path / "cut" / "summary.json").exists() and (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed = train.main(make_config(seg_args(fashion_idx, tmp_path, *student, "--run_name=cut", "--resume=True")))
    for key in ("test_miou", "best_val_miou", "final_test_miou", "best_epoch", "epochs_run", "test_iou"):
        assert resumed[key] == whole[key], key
    digest = lambda run: hashlib.sha256((tmp_path / run / "model.safetensors").read_bytes()).hexdigest()  # noqa
    assert digest("cut") == digest("whole")  # the same weights, bit for bit
