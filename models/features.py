"""Intermediate feature maps of any model, read with forward hooks on named modules (torchdistill's way),
so `forward` never changes and export/deploy graphs stay logits-only.

    stages = feature_stages(model, (1, 28, 28))        # [Stage(name, channels, size)] one per resolution
    with capture(model, [s.name for s in stages]) as maps:
        logits = model(x)                                # maps[name] now holds that module's output

`capture` removes its hooks when the block ends, also on an exception.
"""
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from models.timm_models import feature_modules


class Stage(NamedTuple):
    name: str  # module name in model.named_modules()
    channels: int
    size: int  # spatial height of its output map


@contextmanager
def capture(model: nn.Module, names):
    """Yields {name: output} filled by every forward inside the block; the hooks are removed on exit."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"{type(model).__name__} has no module named {missing[0]!r}")
    maps, handles = {}, []
    for name in names:
        handles.append(modules[name].register_forward_hook(
            lambda _m, _inp, out, name=name: maps.__setitem__(name, out)))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


def candidate_layers(model: nn.Module) -> list:
    """Modules whose outputs are the model's feature maps, in forward order: the residual blocks of the
    project's ResidualCNN family, the stages of CIFAR ResNets / WRNs (`feature_layers()`), the stages a
    timm model lists in its `feature_info`, torchvision ResNets' layer1-4, and the entries of a `features`
    Sequential (EfficientNet and similar)."""
    if hasattr(model, "feature_layers"):
        return list(model.feature_layers())
    names = feature_modules(model)
    if names:
        return names
    names = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    if names:
        return names
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return [f"features.{i}" for i in range(len(model.features))]
    raise ValueError(f"{type(model).__name__}: no known feature layers for feature distillation")


@torch.no_grad()
def feature_stages(model: nn.Module, input_shape: tuple) -> list:
    """The last candidate layer of each spatial resolution, in forward order (one dummy forward of two
    zero images in eval mode: no dropout, no BatchNorm statistics touched; the mode is restored)."""
    names = candidate_layers(model)
    was_training = model.training
    param = next(model.parameters())
    model.eval()
    try:
        with capture(model, names) as maps:
            model(torch.zeros((2, *input_shape), device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    stages = []
    for name in names:
        out = maps.get(name)
        if out is None or out.dim() != 4:
            continue
        stage = Stage(name, int(out.shape[1]), int(out.shape[2]))
        if stages and stages[-1].size == stage.size:
            stages[-1] = stage
        else:
            stages.append(stage)
    return stages


def same_size_pairs(student: list, teacher: list) -> list:
    """[(student stage, teacher stage)] for each student stage whose resolution the teacher also has
    (the teacher's last stage of that resolution)."""
    by_size = {t.size: t for t in teacher}
    return [(s, by_size[s.size]) for s in student if s.size in by_size]


def nearest_stage(stage: Stage, candidates: list) -> Stage:
    """The candidate with the closest resolution to `stage` (ties: the larger map)."""
    return min(candidates, key=lambda c: (abs(c.size - stage.size), -c.size))


def to_common_size(a: torch.Tensor, b: torch.Tensor) -> tuple:
    """Average-pool the larger of two maps to the smaller's height and width (as mdistiller's AT does)."""
    ha, hb = a.shape[-1], b.shape[-1]
    if ha > hb:
        a = torch.nn.functional.adaptive_avg_pool2d(a, b.shape[-2:])
    elif hb > ha:
        b = torch.nn.functional.adaptive_avg_pool2d(b, a.shape[-2:])
    return a, b
