"""deploy/: every variant of a really trained (tiny) student, measured; bad input stops with one line.

One student is trained once per module with the real training code, then deployed once with few timed
repeats and without torch.compile (compiling costs minutes on 2 cores; the CLI default compiles).
"""
import dataclasses
import json
import os
import shutil

import pytest
import torch

import train
from config import make_config, teacher_run_name
from data.dataset import Split
from deploy import measure, onnx_export, report
from deploy.common import Variant
from deploy.variants import VARIANTS, deploy_run, deploy_run_dir
from runtime.run_dir import load_run
from tests.fixtures import run_script
from utils.errors import UserError

VARIANT_KEYS = {"name", "status", "accuracy", "agreement", "size_bytes", "latency_ms_b1", "throughput_b64",
                "device", "threads", "note"}
RUN_KEYS = {"run_name", "role", "params", "model", "test_images", "hardware", "variants"}
TEACHER_FP32 = {"name": "fp32", "status": "ok", "accuracy": 99.0, "agreement": 100.0, "size_bytes": 100_000_000,
                "latency_ms_b1": 50.0, "throughput_b64": 10.0, "device": "cpu", "threads": 2, "note": "eager"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy")
    # a wide head makes most parameters matrices, so int8/fp8 files are dominated by weights, not headers
    cfg = make_config(["--preset=smoke"], method="ce", blocks=2, fc_layers=(512, 256), out_dir=str(out),
                      max_train_samples=1000, max_test_samples=300, epochs=2, augment="none")
    summary = train.main(cfg)
    return os.path.join(str(out), summary["run_name"])


@pytest.fixture(scope="module")
def deployed(run_dir):
    teacher = os.path.join(os.path.dirname(run_dir), teacher_run_name(make_config([])))
    os.makedirs(teacher, exist_ok=True)  # a measured teacher (its deploy.json only) beside the student
    with open(os.path.join(teacher, "deploy.json"), "w") as f:
        json.dump({"run_name": "teacher", "role": "teacher", "model": "seed12", "variants": [TEACHER_FP32]}, f)
    cfg, model, ds, _ = load_run(run_dir, {})
    result = deploy_run(run_dir, cfg, model, ds, repeats=3, compile=False)
    return result, {v["name"]: v for v in result["variants"]}


def test_schema_and_every_variant_reported(deployed, run_dir):
    result, by = deployed
    assert RUN_KEYS <= set(result)
    assert [v["name"] for v in result["variants"]] == list(VARIANTS)
    with open(os.path.join(run_dir, "deploy.json")) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    for v in result["variants"]:
        assert VARIANT_KEYS <= set(v), v["name"]
        assert v["status"] in ("ok", "skipped") and v["note"]
        if v["status"] == "ok":
            assert 0 <= v["accuracy"] <= 100 and 0 <= v["agreement"] <= 100
            assert v["latency_ms_b1"] > 0 and v["throughput_b64"] > 0
            assert v["size_bytes"] == os.path.getsize(os.path.join(run_dir, v["artifact"]))
    assert by["fp32"]["agreement"] == 100.0
    assert by["fp32"]["accuracy"] > 30  # trained: well above 10% chance
    md = open(os.path.join(run_dir, "deploy.md")).read()
    assert "| int8 | ok |" in md and "Targets for int8" in md


def test_int8_agrees_with_fp32_and_is_smaller(deployed):
    _, by = deployed
    for name in ("int8", "onnx-int8"):
        assert by[name]["status"] == "ok", by[name]["note"]
        assert by[name]["agreement"] >= 90.0, name
        assert by[name]["size_bytes"] < 0.6 * by["fp32"]["size_bytes"], name
    assert by["int8"]["ops"]["int8"] == {"conv2d": 6, "linear": 3}  # every conv and Linear, read from its graph


def test_int8_program_carries_no_debug_metadata(deployed, run_dir):
    import zipfile

    with zipfile.ZipFile(os.path.join(run_dir, "deploy", "int8.pt2")) as z:
        graph = next(z.read(n) for n in z.namelist() if n.endswith("models/model.json"))
    assert b"dequantize_per_channel" in graph  # the q/dq program itself is there
    assert b"stack_trace" not in graph and b"from_node" not in graph


def test_timing_runs_in_inference_mode():
    # compiled int8/fp32 graphs are frozen only under inference mode: timed outside it, int8 ran 2.5x slower
    seen = []
    v = Variant("probe", lambda x: seen.append(torch.is_inference_mode_enabled()) or x.sum(1), None, "probe")
    measure.time_variants([v], torch.zeros(1, 3), torch.zeros(64, 3), repeats=3)
    assert seen and all(seen)


def test_low_precision_sizes(deployed):
    _, by = deployed
    fp32 = by["fp32"]["size_bytes"]
    for name in ("bf16", "fp16"):
        assert 0.45 < by[name]["size_bytes"] / fp32 < 0.56, name
        assert by[name]["agreement"] >= 90.0, name
    # fp8: 1 byte per matrix weight + a float32 scale per output channel, the small rest in fp32
    assert 0.2 < by["fp8-weights"]["size_bytes"] / fp32 < 0.32
    assert by["nf4-head-bnb"]["size_bytes"] < by["int8-head-bnb"]["size_bytes"] < fp32


def test_skipped_variants_say_why(deployed, monkeypatch):
    _, by = deployed
    assert by["fp32-compiled"]["status"] == "skipped" and "compile" in by["fp32-compiled"]["note"]
    monkeypatch.setattr(onnx_export, "ort_available", lambda: False)
    v = onnx_export.build_onnx(None)
    assert v.status == "skipped" and "onnxruntime is not installed" in v.note


def test_teacher_comparison_sentence(deployed, run_dir):
    md = open(os.path.join(run_dir, "deploy.md")).read()
    assert "smaller than the fp32 teacher" in md and "points of accuracy below it" in md


def test_targets_are_ratios_to_fp32():
    ref = dict(TEACHER_FP32, throughput_b64=100.0, size_bytes=1000, accuracy=90.0)
    q = dict(ref, name="int8", throughput_b64=300.0, size_bytes=250, accuracy=89.5)
    t = report.targets({"variants": [ref, q]})["int8"]
    assert t["speedup_b64"] == pytest.approx(3.0) and t["bytes_ratio"] == pytest.approx(0.25)
    assert t["accuracy_drop"] == pytest.approx(0.5) and all(t["met"].values())


def test_fresh_deploy_json_is_reused(deployed, run_dir):
    result, _ = deployed
    again = deploy_run_dir(run_dir, make_config([]))
    assert again == json.loads(json.dumps(result))


def test_bad_calibration_shape_writes_nothing(deployed, run_dir):
    before = open(os.path.join(run_dir, "deploy.json")).read()
    cfg, model, ds, _ = load_run(run_dir, {})
    bad = dataclasses.replace(ds, train=Split(torch.zeros(8, 3, 14, 14, dtype=torch.uint8),
                                              torch.zeros(8, dtype=torch.long)))
    with pytest.raises(UserError, match="calibration images have shape"):
        deploy_run(run_dir, cfg, model, bad, repeats=1, compile=False)
    assert open(os.path.join(run_dir, "deploy.json")).read() == before
    assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]


def test_config_that_does_not_match_weights(run_dir, tmp_path):
    bad = tmp_path / "mismatch"
    shutil.copytree(run_dir, bad, ignore=shutil.ignore_patterns("deploy*"))
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(cfg, blocks=3)))
    with pytest.raises(UserError, match="do not match"):
        deploy_run_dir(str(bad), make_config([]))
    assert not (bad / "deploy.json").exists()


def test_cli_run_without_weights_exits_2(run_dir, tmp_path):
    empty = tmp_path / "no_weights"
    empty.mkdir()
    shutil.copy(os.path.join(run_dir, "config.json"), empty / "config.json")
    proc = run_script("evaluate.py", f"--run={empty}", "--deploy=True")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "safetensors" in lines[0]
    assert not (empty / "deploy.json").exists()


def test_config_lists_exactly_the_deploy_variants():
    from config import DEPLOY_VARIANTS
    assert tuple(VARIANTS) == DEPLOY_VARIANTS
