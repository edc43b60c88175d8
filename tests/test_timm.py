"""timm models as teachers and students, offline: runs that train and distill (kd, at, fitnet), local
weights of another head and channel count, bad names and files as one line, and the students' names."""
import json

import pytest
import torch

import train
from config import default_run_name, make_config
from runtime.run_dir import load_run, model_arch, model_blocks, model_label
from models.cnn_model import build_student, count_params
from models.teacher_arch import build_teacher
from report.results import ce_controls, kd_gain, markdown_table
from tests.fixtures import small_run_args
from utils.errors import UserError

TEACHER, STUDENT = "timm:resnet10t", "timm:mobilenetv3_small_050"  # both take 28 px (32x: 28 -> 1 px)
SMALL = small_run_args(max_train_samples=128, max_test_samples=64, teacher_arch=TEACHER)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("timm")
    train.main(make_config(SMALL, role="teacher", out_dir=str(out)))
    return out


def test_timm_teacher_run(runs):
    run = runs / "fashion-mnist_teacher_timm-resnet10t"  # ':' is no path character
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["model"] == f"{TEACHER} (teacher)"
    assert summary["params"] == count_params(build_teacher(make_config(teacher_arch=TEACHER), 1, 10))


@pytest.mark.parametrize("method", ["kd", "at"])
def test_timm_student_distills_from_timm_teacher(runs, method):
    cfg = make_config(SMALL, student_arch=STUDENT, method=method, out_dir=str(runs))
    s = train.main(cfg)
    name = f"fashion-mnist_timm-mobilenetv3_small_050_b64_fp32_{method}_s0"
    assert s["run_name"] == name == default_run_name(cfg) and s["status"] == "complete"
    assert s["model"] == "timm mobilenetv3_small_050 (student)" and s["teacher_arch"] == TEACHER
    assert s["params"] == count_params(build_student(cfg, 1, 10)) and s["model_bytes"] > 0
    if method == "at":
        assert s["hparams"]["pairs"][0] == "bn1->act1 (14 px)"  # timm's feature_info stages, by hooks
    _, model, _, _ = load_run(str(runs / name))  # evaluate.py's way back: a timm model with the run's weights
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_fitnet_reads_a_timm_teachers_stages(runs):
    s = train.main(make_config(SMALL, blocks=2, method="fitnet", out_dir=str(runs)))
    assert s["status"] == "complete" and s["hparams"]["hint"].endswith("teacher act1 (64 ch, 14 px)")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_with_another_head_and_channel_count(tmp_path, suffix):
    from safetensors.torch import save_file

    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet10t", pretrained=False, num_classes=7, in_chans=3).state_dict()
    path = tmp_path / f"resnet10t{suffix}"
    save_file(source, str(path)) if suffix == ".safetensors" else torch.save(source, path)
    student = build_student(make_config(student_arch=TEACHER, student_weights=str(path)), 1, 10)
    state = student.state_dict()
    assert torch.allclose(state["conv1.0.weight"], source["conv1.0.weight"].sum(1, keepdim=True))
    assert torch.equal(state["layer2.0.conv1.weight"], source["layer2.0.conv1.weight"])
    assert state["fc.weight"].shape == (10, 512)  # the 7-class head was left out
    teacher = build_teacher(make_config(teacher_arch=TEACHER, teacher_pretrained=True, teacher_weights=str(path)), 3, 7)
    assert all(torch.equal(v, source[k]) for k, v in teacher.state_dict().items())


def test_bad_names_and_files_are_one_line(tmp_path):
    with pytest.raises(UserError, match="close matches: .*timm:mobilenetv3_small_050"):
        build_student(make_config(student_arch="timm:mobilenetv3_smal"), 1, 10)
    with pytest.raises(UserError, match="--teacher_arch=timm:resnet10x: no timm model"):
        build_teacher(make_config(teacher_arch="timm:resnet10x"), 1, 10)
    for bad in (dict(student_arch="mobilenetv3_small_050"), dict(student_arch="timm:"),
                dict(teacher_arch="timm:a/b"), dict(student_weights="w.pth")):
        with pytest.raises(UserError):
            make_config(**bad)
    with pytest.raises(UserError, match="teacher_weights"):
        build_teacher(make_config(teacher_arch=TEACHER, teacher_pretrained=True), 1, 10)
    garbage = tmp_path / "w.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="w.pth"):
        build_student(make_config(student_arch=STUDENT, student_weights=str(garbage)), 1, 10)
    other = tmp_path / "other.pth"
    torch.save(build_student(make_config(student_arch=TEACHER), 1, 10).state_dict(), other)
    with pytest.raises(UserError, match="not weights of timm:mobilenetv3_small_050"):
        build_student(make_config(student_arch=STUDENT, student_weights=str(other)), 1, 10)


def test_names_and_tables_keep_res_students_and_name_timm_ones():
    res, timm_student = make_config(blocks=6), make_config(student_arch=STUDENT)
    assert default_run_name(res) == "fashion-mnist_res6_b224_fp32_kd_s0"
    assert model_label(res) == "ResidualCNN res6 (student)" and model_arch(res) == "res6" and model_blocks(res) == 6
    assert model_arch(timm_student) == "timm-mobilenetv3_small_050" and model_blocks(timm_student) is None

    def row(arch, blocks, method, acc):
        return {"status": "complete", "role": "student", "run_name": f"{arch}_{method}", "arch": arch,
                "blocks": blocks, "method": method, "precision": "fp32", "precision_how": "fp32 on cpu",
                "params": 1000, "seed": 0, "best_test_acc": acc, "final_test_acc": acc, "train_seconds": 1.0,
                "seconds_per_epoch": 1.0, "hparams": {}, "kd_gain": None}

    rows = [row("res4", 4, "ce", 80.0), row("res4", 4, "kd", 81.0), row("timm-mobilenetv3_small_050", None, "ce", 70.0),
            row("timm-mobilenetv3_small_050", None, "kd", 73.0)]
    ce = ce_controls(rows)
    for r in rows:
        r["kd_gain"] = kd_gain(r, ce)
    assert [r["kd_gain"] for r in rows] == [None, 1.0, None, 3.0]  # each against its own model's control
    table = markdown_table(rows)
    assert table.index("| res4 |") < table.index("| timm-mobilenetv3_small_050 |")


def test_plots_give_timm_students_their_own_series(tmp_path):
    from report.plots.data import group_students, load_runs
    from report.plots.runs import plot_kd_gain, plot_seconds_per_epoch

    def run(name, acc, **facts):
        d = tmp_path / name
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({
            "status": "complete", "run_name": name, "dataset": "fashion-mnist", "best_test_acc": acc,
            "final_test_acc": acc, "seconds_per_epoch": 1.0, "images_per_second": 100.0, "epochs_run": 1,
            "precision": "fp32", "seed": 0, "params": 1000, **facts}))
        (d / "history.json").write_text(json.dumps([{"epoch": 1, "test_acc": acc, "epoch_seconds": 1.0}]))

    run("teacher", 90.0, role="teacher", arch=TEACHER, blocks=None, method="ce")
    for arch, blocks in (("res4", 4), ("timm-mobilenetv3_small_050", None), ("timm-resnet10t", None)):
        for method, acc in (("ce", 80.0), ("kd", 82.0)):
            run(f"{arch}_{method}", acc, role="student", arch=arch, blocks=blocks, method=method)
    runs, _ = load_runs(str(tmp_path))
    assert [key[0] for key in group_students(runs)][::2] == [4, "timm-mobilenetv3_small_050", "timm-resnet10t"]
    assert [r.label for r in runs][:3] == [f"teacher {TEACHER}", "res4", "res4"]
    for plot in (plot_kd_gain, plot_seconds_per_epoch):
        assert (tmp_path / plot(runs, str(tmp_path / f"{plot.__name__}.png"))).stat().st_size > 0
