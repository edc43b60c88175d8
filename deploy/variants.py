"""Turn a trained run into deployable variants and measure each one on the same test set.

    python evaluate.py --run=<run dir> --deploy=True        # -> <run>/deploy.json, deploy.md, deploy/*
    python run_experiments.py --deploy=True                 # every finished run, teacher included

Every variant ships a real file under <run>/deploy/ and its size is that file's size. All variants
are built first, then measured in one process on the CPU (the deployment target here): accuracy and
agreement with fp32 over the whole test split, then interleaved timing rounds (deploy.measure).
deploy.json is written once, atomically, at the very end.
"""
import os
import time
import warnings

import torch

from config import Config, fields_in_scope, student_name, teacher_run_name
from deploy import measure, report
from deploy.common import BuildContext, Variant, first_line, skipped
from deploy.onnx_export import build_onnx, build_onnx_int8
from deploy.quantize import build_bnb_head, build_fp8_weights, build_int8, compiled
from data.transforms import prepare_batch
from runtime.run_dir import load_run, run_weights_file
from utils.atomic import atomic_write_json, atomic_write_text, read_json
from utils.checkpoint import save_weights
from utils.errors import UserError
from utils.precision import autocast_dtype
from utils.precision_table import BF16, FP16, FP32
from utils.run_files import CONFIG, DEPLOY_DIR, DEPLOY_JSON, DEPLOY_MD, read_summary

DEFAULT_REPEATS = Config.deploy_repeats  # timed batch-1 calls per variant (tests pass fewer)


def build_fp32(ctx: BuildContext) -> Variant:
    path = ctx.path(f"{FP32}.safetensors")
    save_weights(ctx.model.state_dict(), path, {"format": FP32})
    ctx.artifacts[FP32] = path
    return Variant(FP32, ctx.fresh_model(), path, "eager PyTorch fp32" +
                   (", channels_last" if ctx.channels_last else ""))


def build_fp32_compiled(ctx: BuildContext) -> Variant:
    if not ctx.compile:
        return skipped("fp32-compiled", "torch.compile disabled for this call (compile=False)")
    path = ctx.artifacts.get(FP32) or build_fp32(ctx).artifact  # same weights file, compiled at load
    return Variant("fp32-compiled", compiled(ctx.fresh_model()), path,
                   "torch.compile (Inductor, freezing, static batch 1 and 64) of fp32.safetensors")


def build_half(ctx: BuildContext, name: str) -> Variant:
    """The model in the 16-bit float of precision `name` (its autocast dtype in the precision table), weights and
    activations."""
    dtype = autocast_dtype(name)
    path = ctx.path(f"{name}.safetensors")
    model = ctx.fresh_model(dtype)
    save_weights(model.state_dict(), path, {"format": name})

    def run(x):
        return model(x.to(dtype)).float()

    return Variant(name, run, path, f"eager PyTorch, {dtype} weights and activations (BN in {dtype} too)")


BUILDERS = {
    FP32: build_fp32,
    "fp32-compiled": build_fp32_compiled,
    BF16: lambda ctx: build_half(ctx, BF16),
    FP16: lambda ctx: build_half(ctx, FP16),
    "int8": build_int8,
    "fp8-weights": build_fp8_weights,
    "int8-head-bnb": lambda ctx: build_bnb_head(ctx, "int8"),
    "nf4-head-bnb": lambda ctx: build_bnb_head(ctx, "nf4"),
    "onnx": build_onnx,
    "onnx-int8": build_onnx_int8,
}
VARIANTS = tuple(BUILDERS)


def calibration_batches(cfg, ds, batch: int) -> list:
    """cfg.calib_samples training images (seeded choice), normalized, in batches; shape-checked."""
    train, test = ds.train.images, ds.test.images
    if train.dim() != 4 or tuple(train.shape[1:]) != tuple(test.shape[1:]):
        raise UserError(f"calibration images have shape {tuple(train.shape)}, but the model's test images are "
                        f"{tuple(test.shape)}: calibration data must be N x {' x '.join(map(str, test.shape[1:]))}")
    if len(train) == 0:
        raise UserError("no training images to calibrate int8 quantization with (calib_samples needs >= 1)")
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(train), generator=g)[:min(cfg.calib_samples, len(train))].sort().values
    images = train.index_select(0, idx)
    return [prepare_batch(images[i:i + batch], ds.mean, ds.std, cfg.channels_last)
            for i in range(0, len(images), batch)]


def _check_model(model, x: torch.Tensor, num_classes: int, run_dir: str) -> tuple:
    """The fp32 model's output shape at batch 1: (1, classes), or (1, classes, H, W) for a segmentation, whose
    maps must be the input's size (every variant must give the same)."""
    try:
        with torch.inference_mode():
            y = model(x)
    except RuntimeError as e:
        raise UserError(f"{run_dir}: the model built from {CONFIG} cannot take the dataset's images "
                        f"{tuple(x.shape[1:])} ({first_line(e, 160)})")
    if y.dim() < 2 or y.shape[1] != num_classes:
        raise UserError(f"{run_dir}: the model has {y.shape[1] if y.dim() > 1 else y.numel()} outputs but the "
                        f"dataset has {num_classes} classes")
    if y.dim() == 4 and y.shape[-2:] != x.shape[-2:]:
        raise UserError(f"{run_dir}: the model labels {tuple(y.shape[-2:])} pixels of a {tuple(x.shape[-2:])} image")
    return tuple(y.shape)


def _build(name: str, ctx: BuildContext, x1: torch.Tensor, shape: tuple) -> Variant:
    t0 = time.perf_counter()
    try:
        v = BUILDERS[name](ctx)
    except UserError:
        raise
    except Exception as e:  # e.g. a quantization backend missing on this machine: recorded, never faked
        return skipped(name, f"could not be built here: {first_line(e)}")
    v = measure.check_runs(v, x1, shape)  # also compiles the batch-1 graph of compiled variants
    v.build_seconds = time.perf_counter() - t0
    print(f"deploy: {name}: {v.status} ({v.build_seconds:.1f}s) {'' if v.status == 'ok' else v.note}")
    return v


# Warnings raised inside torch's own code on every int8 build/load, which a user cannot act on:
# Inductor's int8 lowering copy-constructs tensors; the .pt2 loader warns about CPU weights "groups".
LIBRARY_NOISE = ("To copy construct from a tensor", "No complete tensor found in the group")


def deploy_run(run_dir: str, cfg, model, ds, variants=None, repeats: int = DEFAULT_REPEATS,
               compile: bool = True, threads: int = 0) -> dict:
    """Build, measure and report every variant of a loaded run; writes deploy.json/deploy.md at the end.

    variants: names from VARIANTS (default all; fp32 is always added as the reference); repeats: timed
    batch-1 calls per variant; compile: False skips torch.compile (fp32-compiled skipped, int8 runs its
    q/dq graph uncompiled); threads: intra-op threads for torch and onnxruntime (0 = torch's current)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            for message in LIBRARY_NOISE:
                warnings.filterwarnings("ignore", message=message)
            return _deploy(run_dir, cfg, model, ds, variants, repeats, compile)
    finally:
        torch.set_num_threads(before)


def _deploy(run_dir, cfg, model, ds, variants, repeats, compile) -> dict:
    names = tuple(variants or getattr(cfg, "deploy_variants", None) or VARIANTS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise UserError(f"deploy variant {unknown[0]!r} unknown; choose from {', '.join(VARIANTS)}")
    if FP32 not in names:
        names = (FP32,) + names  # the reference every ratio and agreement is measured against
    if repeats < 1:
        raise UserError(f"repeats={repeats}: must be at least 1")
    model = model.to("cpu").eval()
    calib = calibration_batches(cfg, ds, measure.TIMING_BATCH)
    x1, _ = next(measure.batches(ds.test.images[:1], ds.mean, ds.std, cfg.channels_last, batch=1))
    x64, _ = next(measure.batches(ds.test.images[:measure.TIMING_BATCH], ds.mean, ds.std, cfg.channels_last))
    shape = _check_model(model, x1, ds.num_classes, run_dir)
    ctx = BuildContext(model, calib, x64, os.path.join(run_dir, DEPLOY_DIR), cfg.channels_last, compile)
    load_before = os.getloadavg()[0]
    built = [_build(n, ctx, x1, shape) for n in names]
    ok = [v for v in built if v.status == "ok"]

    labels = ds.test.labels
    preds = {v.name: measure.predictions(v, ds.test.images, ds.mean, ds.std, cfg.channels_last) for v in ok}
    timings = measure.time_variants(ok, x1, x64, repeats)
    threads = torch.get_num_threads()
    rows = []
    for v in built:
        row = {"name": v.name, "status": v.status, **dict.fromkeys(measure.score_names(labels)), "size_bytes": None,
               "latency_ms_b1": None, "throughput_b64": None, "device": "cpu", "threads": threads,
               "note": v.note, "artifact": os.path.relpath(v.artifact, run_dir) if v.artifact else None,
               "build_seconds": round(v.build_seconds, 2), **v.facts}
        if v.status == "ok":
            lat, thr = timings[v.name]
            row.update(measure.scores(preds[v.name], labels, preds[FP32], ds.num_classes),
                       size_bytes=measure.file_size(v.artifact), latency_ms_b1=lat, throughput_b64=thr)
        rows.append(row)

    summary = read_summary(run_dir) or {}
    result = {
        "run_name": summary.get("run_name") or os.path.basename(os.path.normpath(run_dir)),
        "role": cfg.role, "task": cfg.task, "metric": measure.headline(labels),
        "params": sum(p.numel() for p in model.parameters()),
        "model": summary.get("arch") or (cfg.teacher_arch if cfg.role == "teacher" else student_name(cfg)),
        "test_images": len(labels), "calib_images": ctx.calib_images,
        "hardware": measure.hardware(), "threads": threads, "repeats": repeats,
        "repeats_b64": measure.b64_repeats(repeats), "torch": torch.__version__,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
        "variants": rows,
    }
    result["targets"] = report.targets(result)
    teacher = report.find_teacher_deploy(run_dir, summary, teacher_run_name(cfg)) if cfg.role == "student" else None
    text = report.render(result, teacher)
    atomic_write_json(os.path.join(run_dir, DEPLOY_JSON), result)  # only now: never half-written
    atomic_write_text(os.path.join(run_dir, DEPLOY_MD), text)
    print(text)
    return result


def deploy_run_dir(run_dir: str, base_cfg, **kw) -> dict:
    """deploy_run for a run directory (the sweep). Skips when deploy.json is newer than the weights."""
    weights = run_weights_file(run_dir)
    out = os.path.join(run_dir, DEPLOY_JSON)
    if weights and os.path.isfile(out) and os.path.getmtime(out) > os.path.getmtime(weights):
        return read_json(out)
    # the sweep's data location, device and deploy settings; the run's own config.json fixes the rest
    fields = ("data_dir", "device", *fields_in_scope("deploy"))
    cfg, model, ds, _ = load_run(run_dir, {k: getattr(base_cfg, k) for k in fields})
    kw = {"repeats": cfg.deploy_repeats, "threads": cfg.deploy_threads, **kw}
    return deploy_run(run_dir, cfg, model, ds, **kw)

