"""Teachers: the seed12 residual CNN (the original's 26.5M-parameter teacher) and torchvision backbones."""
import os

import torch
from torch import nn

from models.cnn_model import ResidualCNN
from utils.errors import UserError


def seed12(in_channels: int = 3, num_classes: int = 6, width: int = 16) -> ResidualCNN:
    """12 residual blocks, head [512, 256]: 26,534,358 parameters at width 16, 3 channels, 6 classes."""
    return ResidualCNN(12, in_channels, num_classes, width, fc_layers=(512, 256))


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """Same conv with `in_channels` inputs; pretrained RGB filters are averaged for 1 channel."""
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        w = conv.weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
        new.weight.copy_(w * conv.in_channels / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _load_imagenet(model: nn.Module, arch: str, weights_file: str) -> None:
    """ImageNet weights from a given file or the torch hub cache; never downloads (no hang offline)."""
    from torchvision import models as tvm
    from utils.checkpoint import load_state_dict_file

    if weights_file:
        path = weights_file
    else:
        enum = tvm.get_model_weights(arch).DEFAULT
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
    if not os.path.isfile(path):
        raise UserError(f"teacher_pretrained: no ImageNet weights for {arch} at {path}; "
                        f"download them once online (torchvision) or pass --teacher_weights=<file>")
    state = load_state_dict_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or len(missing) > 0 and not all(k.split(".")[0] in ("fc", "classifier") for k in missing):
        raise UserError(f"{path}: not {arch} ImageNet weights (missing {missing[:3]}, unexpected {unexpected[:3]})")


def torchvision_teacher(arch: str, in_channels: int, num_classes: int, pretrained: bool = False,
                        weights_file: str = "") -> nn.Module:
    from torchvision import models as tvm

    model = tvm.get_model(arch, weights=None)
    if pretrained:
        _load_imagenet(model, arch, weights_file)
    if arch.startswith("resnet"):
        model.conv1 = _adapt_first_conv(model.conv1, in_channels)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif arch.startswith("efficientnet"):
        model.features[0][0] = _adapt_first_conv(model.features[0][0], in_channels)
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    else:
        raise UserError(f"--teacher_arch={arch}: no adapter for this backbone")
    return model


def build_teacher(cfg, in_channels: int, num_classes: int) -> nn.Module:
    if cfg.teacher_arch == "seed12":
        if cfg.teacher_pretrained:
            raise UserError("--teacher_pretrained=True: seed12 has no ImageNet weights; "
                            "use resnet18, resnet50 or efficientnet_b0")
        return seed12(in_channels, num_classes, cfg.teacher_width)
    return torchvision_teacher(cfg.teacher_arch, in_channels, num_classes, cfg.teacher_pretrained,
                               cfg.teacher_weights)


def build_model(cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The model a run with this config trains (teacher or student)."""
    if cfg.role == "teacher":
        return build_teacher(cfg, in_channels, num_classes)
    from models.cnn_model import build_student
    return build_student(cfg, in_channels, num_classes)
