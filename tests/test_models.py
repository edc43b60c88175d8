import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from config import make_config
from models.cnn_model import ResidualCNN, build_student, count_params, res4, res10
from models.teacher_arch import build_teacher, seed12
from models import blocks
from tests.fixtures import make_imagefolder, small_run_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n_blocks,fc,expected", [(4, [32], 98_294), (6, [64], 408_854),
                                                  (8, [128], 1_648_470), (10, [256], 6_601_686)])
def test_original_student_counts(n_blocks, fc, expected):
    model = ResidualCNN(n_blocks, in_channels=3, num_classes=6, fc_layers=fc)
    assert count_params(model) == expected
    assert count_params(ResidualCNN(n_blocks, 3, 6)) == expected  # the default head follows the rule


def test_seed12_teacher_count():
    assert count_params(seed12(3, 6)) == 26_534_358


def test_factories_are_the_parametric_class():
    assert count_params(res4(in_channels=3, num_classes=6)) == 98_294
    assert isinstance(res10(), ResidualCNN)
    assert sum(isinstance(m, blocks.ResidualBlock) for m in res10().modules()) == 10


@pytest.mark.parametrize("arch,expected", [("resnet20", 272_474), ("resnet56", 855_770), ("resnet110", 1_730_714),
                                           ("wrn16_4", 2_748_890), ("wrn28_10", 36_479_194), ("wrn40_4", 8_949_210)])
def test_small_input_teacher_counts(arch, expected):
    # 3 channels, 10 classes: the CIFAR counts (ResNet-20 0.27M with projection shortcuts; the WRN paper's
    # WRN-28-10 36.5M, WRN-40-4 8.9M, WRN-16-4 2.7M)
    assert count_params(build_teacher(make_config(teacher_arch=arch), 3, 10)) == expected


def test_small_input_teachers_keep_7px_maps_at_28px():
    from models.features import feature_stages

    for arch in ("resnet20", "wrn16_2"):
        stages = feature_stages(build_teacher(make_config(teacher_arch=arch), 1, 10), (1, 28, 28))
        assert [s.size for s in stages] == [28, 14, 7]
    assert [s.size for s in feature_stages(seed12(1, 10, 4), (1, 28, 28))] == [28, 14, 7, 4, 2, 1]


@pytest.mark.parametrize("arch", ["seed12", "resnet20", "wrn10_2", "resnet18", "resnet50", "efficientnet_b0"])
def test_teachers_forward_backward_no_nan(arch):
    cfg = make_config(teacher_arch=arch, teacher_width=4 if arch == "seed12" else 16)
    model = build_teacher(cfg, in_channels=1, num_classes=10)
    out = model(torch.randn(2, 1, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_student_forward_shapes_and_channels_last():
    model = build_student(make_config(blocks=6), in_channels=1, num_classes=10).to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    assert model(x).shape == (4, 10)


def test_pretrained_teacher_offline_fails_fast(tmp_path, monkeypatch):
    from utils.errors import UserError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="ImageNet weights"):
        build_teacher(make_config(teacher_arch="resnet18", teacher_pretrained=True), 3, 6)
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_teacher(make_config(teacher_arch="wrn16_4", teacher_pretrained=True), 3, 6)


@pytest.mark.parametrize("arch", ["wrn15_4", "wrn16_0", "resnet21", "vgg16"])
def test_bad_teacher_arch_is_one_line(arch):
    from utils.errors import UserError

    with pytest.raises(UserError, match="teacher_arch"):
        make_config(teacher_arch=arch)


# ----------------------------------------------------------------------------- channels_last on a CPU

def test_narrow_strided_1x1_convolutions_train_in_nchw():
    from utils.device import channels_last_trainable

    assert not channels_last_trainable(seed12(3, 6, width=4))  # the smoke teacher: Conv2d(4, 8, 1, stride=2)
    assert channels_last_trainable(seed12(3, 6, width=16)) and channels_last_trainable(ResidualCNN(10, 3, 6))


def test_smoke_teacher_on_rgb_folder_data_trains_without_crashing(tmp_path):
    # the smoke teacher's Conv2d(4, 8, 1, stride=2) crashed (exit 139, abort or hang) in channels_last backward
    # on an AVX2 EPYC; a subprocess, so a crash or hang fails this test instead of killing the suite
    root = make_imagefolder(tmp_path / "rgb", classes=("a", "b", "c"), per_class=4, size=64)
    argv = small_run_args(root, f"{tmp_path}/out", "--role=teacher", "--dataset=imagefolder", batch_size=4)
    r = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=180)  # it hung without the rule
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "training in NCHW" in r.stdout
    s = json.loads((tmp_path / "out" / "imagefolder_teacher_seed12" / "summary.json").read_text())
    assert s["status"] == "complete" and s["image_size"] == 64 and s["in_channels"] == 3
