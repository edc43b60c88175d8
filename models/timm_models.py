"""timm models as teachers (`--teacher_arch=timm:<name>`) and students (`--student_arch=timm:<name>`).

Any timm model by name, built for the dataset's channels and classes with random weights
(pretrained=False always: nothing is fetched from a hub), or from a local weights file (a state dict in
.pth/.pt, loaded weights-only, or .safetensors): the first conv is adapted to the dataset's channels
and a classifier of another class count is left freshly initialized. The feature methods read the
stages timm lists in `model.feature_info` (models/features.py), so the state dict keeps timm's keys
and a run's model.safetensors loads straight into `timm.create_model(name, num_classes=...)`.
"""
import difflib

from torch import nn

from config import TIMM_PREFIX as PREFIX
from utils.errors import UserError, first_line


def timm_name(arch: str) -> str:
    """'timm:mobilenetv3_small_050' -> 'mobilenetv3_small_050'; '' for an arch that is no timm model."""
    return arch[len(PREFIX):] if arch.startswith(PREFIX) else ""


def close_matches(name: str, limit: int = 5) -> list:
    """timm model names like `name`: those containing it (timm.list_models pattern), else the nearest spellings."""
    import timm

    found = timm.list_models(f"*{name}*")
    return found[:limit] if found else difflib.get_close_matches(name, timm.list_models(), n=limit, cutoff=0.6)


def image_size(cfg) -> int:
    """The side of the run's input images (--image_size, else the dataset's native size)."""
    from data.dataset import NATIVE_SIZE

    return cfg.image_size or NATIVE_SIZE.get(cfg.dataset, 0)


def create(arch: str, in_channels: int, num_classes: int, weights_file: str = "", flag: str = "",
           size: int = 0) -> nn.Module:
    """The timm model `arch` ('timm:<name>') for `in_channels` x `num_classes` (and `size` px where the model
    takes an img_size, as ViTs do), with random weights or those of `weights_file`. `flag` names the config
    field in errors (e.g. '--student_arch')."""
    import timm

    name = timm_name(arch)
    if not timm.is_model(name):
        near = close_matches(name)
        raise UserError(f"{flag}={arch}: no timm model of that name"
                        + (f"; close matches: {', '.join(PREFIX + n for n in near)}" if near else
                           "; timm.list_models() lists them"))
    kwargs = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels)
    try:
        try:
            model = timm.create_model(name, **kwargs, **({"img_size": size} if size else {}))
        except TypeError as e:  # a CNN: no img_size argument, any input size
            if "img_size" not in str(e):
                raise
            model = timm.create_model(name, **kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        raise UserError(f"{flag}={arch}: timm cannot build it for {in_channels} channel(s) and {num_classes} "
                        f"classes ({first_line(e)})") from None
    if weights_file:
        load_weights(model, weights_file, in_channels, arch)
    return model


def _head_prefixes(model: nn.Module) -> tuple:
    """Module names of the classifier (pretrained_cfg's 'classifier', e.g. 'fc', 'classifier', 'head.fc')."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return tuple(n + "." for n in ((names,) if isinstance(names, str) else names))


def _first_convs(model: nn.Module) -> tuple:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv") or ()
    return tuple(f"{n}.weight" for n in ((names,) if isinstance(names, str) else names))


def adapt_state_dict(model: nn.Module, state: dict, in_channels: int) -> tuple:
    """(state fitted to `model`, keys left to the model's fresh init): the first conv's weights summed or
    repeated to `in_channels` (timm's adapt_input_conv), the classifier's dropped when its class count
    differs. Other mismatches are left in place for load_state_dict to name."""
    from timm.models import adapt_input_conv

    own = model.state_dict()
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    heads, first = _head_prefixes(model), _first_convs(model)
    fresh = []
    for key in list(state):
        if key not in own or state[key].shape == own[key].shape:
            continue
        w = state[key]
        if key in first and w.dim() == 4 and w.shape[0] == own[key].shape[0] and w.shape[2:] == own[key].shape[2:]:
            state[key] = adapt_input_conv(in_channels, w, base_chans=w.shape[1])
        elif key.startswith(heads):
            del state[key]
            fresh.append(key)
    return state, fresh


def load_weights(model: nn.Module, path: str, in_channels: int, arch: str) -> None:
    """Local weights into a timm model: one line naming the file when they are not weights of `arch`."""
    from utils.checkpoint import load_state_dict_file

    state, fresh = adapt_state_dict(model, load_state_dict_file(path), in_channels)
    own, heads = model.state_dict(), _head_prefixes(model)
    missing = [k for k in own if k not in state and not k.startswith(heads)]  # a headless file is fine
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
              if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        what = (f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected
                else f"shapes differ: {', '.join(shapes[:2])}")
        raise UserError(f"{path}: not weights of {arch} for {in_channels} channel(s) ({what})")
    model.load_state_dict(state, strict=False)
    if fresh:
        print(f"{path}: loaded into {arch}; its classifier ({', '.join(fresh)}) was for another class "
              f"count and starts fresh")


def feature_modules(model: nn.Module) -> list:
    """The stage outputs timm lists in model.feature_info (one per reduction), in forward order; [] for
    a model without feature_info."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)):
        return []
    names = dict(model.named_modules())
    return [f["module"] for f in info if isinstance(f, dict) and f.get("module") in names]

