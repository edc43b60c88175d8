"""A quantization-aware student's speed: its own deployable file timed, where a real kernel runs it.

    python evaluate.py --run=<QAT run> --deploy=True   # -> <run>/deploy_qat.json

int8 (model.int8.pt2): compiled with freezing, Inductor lowers the q/dq graph to oneDNN int8 kernels; timed
against the fp32 student it started from (--init_from), eager and compiled, and that student's post-training
int8, interleaved (deploy.measure); throughput_vs_fp32_eager holds the ratios. int4 / ternary /
binary (model.quant.safetensors): no low-bit kernel exists here, so nothing is timed and the file says so.
"""
import copy
import os

import torch

from deploy import measure
from deploy.common import Variant
from deploy.quantize import compiled, int8_runner
from models.cnn_model import build_student
from quant.students import deploy_how
from runtime.run_dir import load_run, run_weights_file
from utils.atomic import atomic_write_json
from utils.checkpoint import load_weights_into
from utils.precision_table import FP32
from utils.run_files import DEPLOY_QAT


def time_quantized_run(run_dir: str, cfg, model, ds, weights: str, repeats: int) -> dict:
    x64 = next(measure.batches(ds.test.images[:measure.TIMING_BATCH], ds.mean, ds.std, cfg.channels_last))[0]
    x1 = x64[:1].clone()
    result = {"run": run_dir, "file": os.path.basename(weights), "file_bytes": os.path.getsize(weights),
              "how": deploy_how(cfg.qat), "hardware": measure.hardware()}
    if cfg.qat != "int8":
        result["latency"] = None  # (evaluate.py has printed how the file runs)
    else:
        int8, _ = int8_runner(model, "int8 QAT program", compile=True)
        variants = [Variant("int8-qat", int8, weights, "compiled with freezing")]
        init = run_weights_file(cfg.init_from) if cfg.init_from else None
        if init:  # the fp32 student it started from, eager and compiled, and its post-training int8: the ratios
            variants += start_variants(cfg, ds, init)
        times = measure.time_variants(variants, x1, x64, repeats)
        result["latency"] = {name: {"batch1_ms": ms, "batch64_images_per_second": ips}
                             for name, (ms, ips) in times.items()}
        for name, (ms, ips) in times.items():
            print(f"{name}: {ms:.3f} ms at batch 1 (median of {repeats}), {ips:,.0f} images/s at batch 64")
        if FP32 in times:
            result["throughput_vs_fp32_eager"] = {name: round(ips / times[FP32][1], 3)
                                                  for name, (_, ips) in times.items()}
    atomic_write_json(os.path.join(run_dir, DEPLOY_QAT), result)
    return result


def start_variants(cfg, ds, init: str) -> list:
    """The --init_from student a QAT run started from: fp32 eager, fp32 compiled alike, and its post-training
    int8 (PT2E static, calibrated as deploy.json's int8 variant, in memory: deploy.json times its file)."""
    from deploy.variants import calibration_batches
    from quant.pt2e import ptq_int8

    fp32 = build_student(cfg, ds.in_channels, ds.num_classes)
    load_weights_into(fp32, init)
    fp32 = fp32.eval().to(memory_format=torch.channels_last) if cfg.channels_last else fp32.eval()
    calib = calibration_batches(cfg, ds, measure.TIMING_BATCH)
    ptq, _ = int8_runner(ptq_int8(copy.deepcopy(fp32), calib[0][:2].clone(), calib), "", compile=True)
    return [Variant(FP32, fp32, init, "the --init_from student, eager"),
            Variant("fp32-compiled", compiled(fp32), init, "the --init_from student, compiled"),
            Variant("int8-ptq", ptq, init, "the --init_from student, post-training int8, compiled with freezing")]


def ptq_contrasts_of_run(init_dir: str, modes) -> dict:
    """The PTQ contrasts of a finished fp32 student (quant/students.py: ptq_contrasts) at each of `modes`,
    measured on its own test split; int8 calibrated on cfg.calib_samples of its training images."""
    from deploy.variants import calibration_batches
    from quant.students import ptq_contrasts
    from runtime.inference import evaluate_logits, predict

    cfg, model, ds, _ = load_run(init_dir)

    def test_acc(m) -> float:
        return evaluate_logits(predict(m, ds.test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last),
                               ds.test.labels)[1]

    calib = calibration_batches(cfg, ds, measure.TIMING_BATCH)
    return ptq_contrasts(init_dir, modes, test_acc, model, cfg, ds, calib)
