"""evaluate.py --deploy=True on a segmentation student: its fp32 and post-training int8 variants measured on the test
scenes (mIoU, pixel accuracy, agreement per pixel, bytes, latency) into deploy.json, the int8 one a real int8
program (every convolution's weights stored as int8), on a tiny really trained res4 segmenter. Deployed without
torch.compile (Inductor costs about a minute on one core; the CLI compiles), so its timings are the q/dq
reference graph's: they are checked to be measured, not to be fast."""
import functools
import json
import math
import os

import pytest
import torch

import evaluate
import train
from config import make_config
from deploy import variants
from quant.pt2e import load_program
from tests.test_segment_task import seg_args

RES4_CONVS = 14  # stem, 4 blocks x 2, 2 projection shortcuts, 2 decoder levels, the 1x1 head (models/segment.py)


@pytest.fixture(scope="module")
def deployed(fashion_idx, tmp_path_factory):
    out = tmp_path_factory.mktemp("segdeploy")
    # res4 (130k parameters): a smaller student's int8 program would be mostly its ~0.1 MB graph description
    summary = train.main(make_config(seg_args(fashion_idx, out, "--method=ce", "--blocks=4")))
    run = out / summary["run_name"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(variants, "deploy_run", functools.partial(variants.deploy_run, compile=False))
        evaluate.cli([f"--run={run}", "--deploy=True", "--deploy_variants=[int8]", "--deploy_repeats=3"])
    result = json.loads((run / "deploy.json").read_text())
    return run, result, {v["name"]: v for v in result["variants"]}


def test_int8_segmenter_is_measured_on_miou_beside_fp32(deployed):
    run, result, by = deployed
    assert result["task"] == "segment" and result["metric"] == "miou" and list(by) == ["fp32", "int8"]
    fp32, int8 = by["fp32"], by["int8"]
    assert int8["status"] == "ok", int8["note"]
    evaluation = json.loads((run / "evaluation.json").read_text())  # evaluate.py scored the same weights first
    assert fp32["miou"] == pytest.approx(evaluation["miou"], abs=0.2)
    assert fp32["pixel_accuracy"] == pytest.approx(evaluation["pixel_accuracy"], abs=0.2)
    for v in (fp32, int8):
        assert all(math.isfinite(v[k]) for k in ("miou", "pixel_accuracy", "agreement", "latency_ms_b1",
                                                 "throughput_b64"))
        assert 0 <= v["miou"] <= 100 and v["accuracy"] == v["pixel_accuracy"] and v["latency_ms_b1"] > 0
        assert v["size_bytes"] == os.path.getsize(run / v["artifact"])
    assert int8["agreement"] >= 95.0  # the same labels as fp32 on nearly every pixel
    assert int8["size_bytes"] < 0.7 * fp32["size_bytes"]
    assert "miou_drop" in result["targets"]["int8"]
    md = (run / "deploy.md").read_text()
    assert "| variant | status | mIoU % | pixel acc % | pixel agreement % |" in md and "| int8 | ok |" in md


def test_int8_segmenter_is_a_real_int8_program(deployed):
    run, _, by = deployed
    ops = by["int8"]["ops"]
    assert ops["int8"] == {"conv2d": RES4_CONVS}  # every conv, the decoder's and the head's included
    assert ops["float"]["upsample_bilinear2d"] == 2 and ops["float"]["cat"] == 2  # the decoder's joins stay float
    assert "14 conv2d" in by["int8"]["note"] and "2 upsample_bilinear2d" in by["int8"]["note"]
    program = load_program(run / by["int8"]["artifact"])
    kernels = [t for t in (*program.state_dict.values(), *program.constants.values()) if t.dim() == 4]
    assert len(kernels) == RES4_CONVS and all(t.dtype == torch.int8 for t in kernels)  # no float copy beside them


def test_the_sweep_deploys_a_segmentation_run_dir(deployed, fashion_idx):
    run, _, _ = deployed
    (run / "deploy.json").unlink()  # as run_experiments.py --deploy=True finds a finished run: built afresh
    base = make_config(seg_args(fashion_idx, run.parent, "--method=ce"))
    result = variants.deploy_run_dir(str(run), base, variants=("fp32",), repeats=1, compile=False)
    assert result["metric"] == "miou" and result["variants"][0]["miou"] is not None
    assert json.loads((run / "deploy.json").read_text()) == json.loads(json.dumps(result))
