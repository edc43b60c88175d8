"""Teachers: the seed12 residual CNN (the original's 26.5M-parameter teacher), the CIFAR-style ResNets
and wide ResNets made for small inputs, torchvision backbones, and any timm model (`timm:<name>`,
models/timm_models.py).

    resnet20/32/44/56/110   He et al. 2016, section 4.2: 3 stages of n = (depth-2)/6 basic blocks with
                            16/32/64 channels (28->14->7 px, or 32->16->8), global pool, one Linear
    wrn{depth}_{k}          Zagoruyko & Komodakis 2016: 3 stages of (depth-4)/6 pre-activation blocks
                            with 16k/32k/64k channels; e.g. wrn16_4 (2.7M params), wrn28_10 (36.5M)

seed12 at 28 px shrinks its maps to 1x1 after six stride-2 stages, so most of its 26.5M parameters
see one pixel: the small-input families keep 7x7 maps at the end.
"""
import os

import torch
from torch import nn

from config import CIFAR_RESNETS, SEG_PATTERN, TIMM_PREFIX, TORCHVISION_TEACHERS, WRN_PATTERN
from models.blocks import ResidualBlock
from models.cnn_model import ResidualCNN
from utils.errors import UserError

class SmallInputResNet(nn.Module):
    """CIFAR-style ResNet (post-activation) or wide ResNet (pre-activation): a 3x3 stem at full
    resolution, three stages of `n` blocks of `widths` channels (stride 2 entering stages 2 and 3),
    global average pooling, one Linear. The stages are the feature maps feature methods read."""

    def __init__(self, n: int, widths: tuple, in_channels: int, num_classes: int, preact: bool = False,
                 dropout: float = 0.0, stem: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False),
                                  *([] if preact else [nn.BatchNorm2d(stem), nn.ReLU(inplace=True)]))
        c_in, stages = stem, []
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(ResidualBlock(c_in, width, 2 if (j == 0 and i > 0) else 1, preact, dropout))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        # pre-activation blocks end without BN-ReLU: the network adds one before pooling
        self.final = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_layers(self) -> list:
        return ["stage1", "stage2", "stage3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(self.final(x)), 1))


def cifar_resnet(depth: int, in_channels: int = 3, num_classes: int = 10) -> SmallInputResNet:
    if (depth - 2) % 6:
        raise UserError(f"resnet{depth}: a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110)")
    return SmallInputResNet((depth - 2) // 6, (16, 32, 64), in_channels, num_classes)


def wide_resnet(depth: int, k: int, in_channels: int = 3, num_classes: int = 10,
                dropout: float = 0.0) -> SmallInputResNet:
    if (depth - 4) % 6 or depth < 10 or k < 1:
        raise UserError(f"wrn{depth}_{k}: a wide ResNet has depth 6n+4 (10, 16, 22, 28, 40, ...) and width k >= 1")
    return SmallInputResNet((depth - 4) // 6, (16 * k, 32 * k, 64 * k), in_channels, num_classes, preact=True,
                            dropout=dropout)




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
    arch = cfg.teacher_arch
    if arch.startswith(TIMM_PREFIX):  # weights from a local file only: nothing is fetched from a hub
        from models import timm_models
        if cfg.teacher_pretrained and not cfg.teacher_weights:
            raise UserError(f"--teacher_pretrained=True: a timm teacher ({arch}) loads a local file only; "
                            f"pass --teacher_weights=<.pth, .pt or .safetensors file>")
        return timm_models.create(arch, in_channels, num_classes, cfg.teacher_weights if cfg.teacher_pretrained
                                  else "", "--teacher_arch", timm_models.image_size(cfg))
    if arch not in TORCHVISION_TEACHERS and cfg.teacher_pretrained:
        raise UserError(f"--teacher_pretrained=True: {arch} has no ImageNet weights; "
                        f"use {', '.join(TORCHVISION_TEACHERS)} or a timm:<name> teacher with --teacher_weights")
    if arch == "seed12":
        return seed12(in_channels, num_classes, cfg.teacher_width)
    seg = SEG_PATTERN.match(arch)
    if seg:  # a segmentation teacher: a deeper or wider segmenter of the student family
        from models.segment import build_segmenter
        return build_segmenter(int(seg.group(1)), int(seg.group(2)), in_channels, num_classes)
    if arch in CIFAR_RESNETS:
        return cifar_resnet(int(arch[len("resnet"):]), in_channels, num_classes)
    wrn = WRN_PATTERN.match(arch)
    if wrn:
        return wide_resnet(int(wrn.group(1)), int(wrn.group(2)), in_channels, num_classes)
    return torchvision_teacher(cfg.teacher_arch, in_channels, num_classes, cfg.teacher_pretrained,
                               cfg.teacher_weights)


def build_model(cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The model a run with this config trains (teacher or student)."""
    if cfg.role == "teacher":
        return build_teacher(cfg, in_channels, num_classes)
    from utils.names import METHODS, SEGMENT
    if cfg.task == SEGMENT:  # a class per pixel: the student family's encoder and a light decoder
        from models.segment import build_segmenter
        return build_segmenter(cfg.blocks, cfg.width, in_channels, num_classes)
    if METHODS[cfg.method].exits:  # byot: a classifier on every stage of the ResidualCNN
        from models.multi_exit import MultiExitCNN
        return MultiExitCNN(cfg.blocks, in_channels, num_classes, cfg.width, cfg.fc_layers)
    from models.cnn_model import build_student
    return build_student(cfg, in_channels, num_classes)
