"""--precision=auto and --teacher_precision=auto: fp32 where the hardware has no native bf16 units (from the
CPU's flags); where it has them, bf16 only if a measured step of the run's own model is at least 10% faster,
the measurement cached per CPU, torch, threads, model and batch; every run says what was measured."""
import json
import os

import pytest
import torch

import run_experiments
import train
from config import default_run_name, make_config
from runtime import auto_precision
from utils import device as device_mod
from utils.device import resolve_auto_precision

CPU = torch.device("cpu")


@pytest.fixture
def timed(monkeypatch, tmp_path):
    """Mocked timings: {(role, bf16): seconds per step}; the calls are recorded; the cache in tmp_path (never the
    data_dir's real one, which must hold real measurements)."""
    speeds, calls = {}, []
    monkeypatch.setattr(auto_precision, "cache_path", lambda cfg: str(tmp_path / "cache" / auto_precision.CACHE_FILE))

    def fake(cfg, role, bf16):
        calls.append((role, bf16))
        return speeds[(role, bf16)]

    monkeypatch.setattr(auto_precision, "time_step", fake)
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    monkeypatch.setattr(auto_precision, "busy", lambda: "")  # an idle machine, whatever else the suite runs
    return speeds, calls


def test_a_measurement_beside_other_work_holds_for_its_process_and_is_never_written(timed, tmp_path, monkeypatch):
    speeds, calls = timed
    speeds.update({("train", False): 1.0, ("train", True): 0.5})
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(auto_precision.os, "getloadavg", lambda: (cores + 1.0, 2.0, 1.0))  # one more than it has
    monkeypatch.setattr(auto_precision, "busy", busy_before)
    monkeypatch.setattr(auto_precision, "_THIS_PROCESS", {})
    cfg = make_config(["--preset=smoke", f"--data_dir={tmp_path}", "--blocks=2"])
    precision, note = auto_precision.choose(cfg, "train", CPU)
    assert precision == "bf16" and (f"; load average {cores + 1.0:.1f} on {cores} cores as it measured, so not "
                                    f"cached past this process") in note
    assert not (tmp_path / "cache" / auto_precision.CACHE_FILE).exists()
    n = len(calls)
    # the same process asks again (the sweep's control, its table): the same measurement, even where a new one
    # would now say fp32, so a student and its control never split
    speeds.update({("train", False): 0.5, ("train", True): 1.0})
    assert auto_precision.choose(cfg, "train", CPU) == (precision, note) and len(calls) == n
    monkeypatch.setattr(auto_precision, "_THIS_PROCESS", {})  # a new process on an idle machine: measured and kept
    monkeypatch.setattr(auto_precision.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert auto_precision.choose(cfg, "train", CPU)[0] == "fp32" and len(calls) > n
    assert (tmp_path / "cache" / auto_precision.CACHE_FILE).exists()


busy_before = auto_precision.busy  # the real check, before the fixture mocks it


def test_without_bf16_units_auto_is_fp32_unmeasured(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: ["avx2"])
    monkeypatch.setattr(auto_precision, "time_step", lambda *a: pytest.fail("measured on a CPU without bf16 units"))
    assert resolve_auto_precision("auto", CPU) == ("fp32", "auto: no native bf16 units (avx2)")
    assert auto_precision.choose(make_config(["--preset=smoke"]), "train", CPU)[0] == "fp32"
    assert resolve_auto_precision("fp8", CPU) == ("fp8", "")  # an explicit precision is kept


@pytest.mark.parametrize("fp32, bf16, expected, says", [
    (1.0, 0.6, "bf16", "measured 1.67x the speed of fp32"),
    (1.0, 0.95, "fp32", "only 1.05x faster, under the 1.10x margin"),
    (1.0, 1.33, "fp32", "measured 1.33x slower"),  # a Xeon without AMX: bf16 has units and is slower
])
def test_auto_picks_what_it_measured_faster(timed, tmp_path, fp32, bf16, expected, says):
    speeds, calls = timed
    speeds.update({("train", False): fp32, ("train", True): bf16})
    cfg = make_config(["--preset=smoke", f"--data_dir={tmp_path}"])
    precision, note = auto_precision.choose(cfg, "train", CPU)
    assert precision == expected and says in note and "AVX512-BF16" in note
    assert len(calls) == 2 * auto_precision.ROUNDS  # interleaved rounds of both precisions


def test_the_measurement_is_cached_per_cpu_torch_model_and_batch(timed, tmp_path):
    speeds, calls = timed
    speeds.update({("train", False): 1.0, ("train", True): 0.5})
    cfg = make_config(["--preset=smoke", f"--data_dir={tmp_path}", "--blocks=2"])
    first = auto_precision.choose(cfg, "train", CPU)
    n = len(calls)
    assert auto_precision.choose(cfg, "train", CPU) == first and len(calls) == n  # read back, not timed again
    cache = json.loads((tmp_path / "cache" / auto_precision.CACHE_FILE).read_text())
    (key,) = cache
    assert "family" in key and torch.__version__ in key and "res2" in key and "batch 64" in key
    assert auto_precision.cache_key(make_config(["--preset=smoke", "--role=teacher", "--teacher_arch=resnet20"]),
                                    "train").count("resnet20") == 1  # a teacher run times itself
    auto_precision.choose(make_config(["--preset=smoke", f"--data_dir={tmp_path}", "--blocks=2", "--batch_size=32"]),
                          "train", CPU)
    assert len(calls) > n  # another batch: measured anew
    (tmp_path / "cache" / auto_precision.CACHE_FILE).write_text("not json")  # a torn cache: measured again
    assert auto_precision.choose(cfg, "train", CPU) == first


def test_the_teacher_timed_is_the_checkpoints_own_and_a_student_only_field_is_dropped(tmp_path):
    from config import RELEASED_TEACHER

    cfg = make_config(["--preset=transfer", "--teacher_precision=auto", "--blocks=4"])
    t = auto_precision.timed_config(cfg, "teacher")
    assert (t.role, t.teacher_arch, t.unlabeled_samples, t.qat) == ("teacher", "resnet20", 0, "none")
    assert cfg.teacher_checkpoint == RELEASED_TEACHER
    assert "forward teacher resnet20" in auto_precision.cache_key(cfg, "teacher")
    assert auto_precision.timed_batch(make_config(["--image_size=150"]), "teacher") < 16  # predict()'s CPU cap


def test_a_real_measurement_times_both_precisions(tmp_path):
    cfg = make_config(["--preset=smoke", f"--data_dir={tmp_path}", "--blocks=1", "--batch_size=8"])
    m = auto_precision.measure(cfg, "train")
    assert m["fp32_seconds"] > 0 and m["bf16_seconds"] > 0
    assert auto_precision.measure(cfg, "teacher")["bf16_seconds"] > 0


def test_a_segmenter_is_timed_on_its_canvas_with_a_class_a_pixel(tmp_path):
    cfg = make_config(["--preset=smoke", f"--data_dir={tmp_path}", "--task=segment", "--dataset=fashion-mnist-scenes",
                       "--scene_canvas=[32,40]", "--blocks=2", "--batch_size=4", "--teacher_arch=resseg2_8"])
    assert auto_precision.model_shape(cfg) == (1, 11, (32, 40))
    assert auto_precision.measure(cfg, "train")["bf16_seconds"] > 0  # a step: [N, 11, 32, 40] against [N, 32, 40]
    assert "forward teacher resseg2_8" in auto_precision.cache_key(cfg, "teacher")


@pytest.mark.parametrize("faster", [True, False])
def test_the_sweep_names_what_auto_chose(timed, tmp_path, faster):
    speeds, _ = timed
    speeds.update({("train", False): 1.0, ("train", True): 0.5 if faster else 2.0})
    runs = run_experiments.grid(make_config(["--preset=smoke", "--device=cpu", "--sweep_blocks=[2]",
                                             f"--data_dir={tmp_path}", "--sweep_precisions=[fp32,auto]",
                                             "--sweep_methods=[kd]"]))
    kd = [c for c in runs if c.method == "kd"]
    assert [c.precision for c in kd] == (["fp32", "bf16"] if faster else ["fp32"])  # no duplicate
    # each precision's students have their CE control in that precision: the gains stay paired
    assert [c.precision for c in runs if c.method == "ce" and c.role == "student"] == [c.precision for c in kd]
    if faster:
        assert "auto: bf16" in kd[1].precision_note and "_bf16_kd_" in default_run_name(kd[1])


def test_a_gain_is_paired_with_the_control_of_its_own_precision():
    from report.results import ce_controls, kd_gain

    runs = [{"role": "student", "status": "complete", "blocks": 4, "seed": 0, "method": m, "precision": p,
             "best_test_acc": acc} for m, p, acc in
            (("ce", "fp32", 80.0), ("ce", "bf16", 79.0), ("kd", "bf16", 81.5), ("kd", "fp8", 80.5))]
    ce = ce_controls(runs)
    assert kd_gain(runs[2], ce) == pytest.approx(2.5)  # bf16 KD against the bf16 control, not the fp32 one
    assert kd_gain(runs[3], ce) == pytest.approx(0.5)  # no fp8 control: the fp32 one, as older sweeps had


def test_a_run_records_autos_choice(timed, tmp_path):
    speeds, _ = timed
    speeds.update({("train", False): 1.0, ("train", True): 1.33})
    s = train.main(make_config(["--preset=smoke", "--device=cpu", "--blocks=2", "--method=ce", "--precision=auto",
                                "--max_train_samples=128", f"--out_dir={tmp_path}"]))
    assert s["precision"] == "fp32" and "_fp32_" in s["run_name"]
    assert "auto: fp32 (bf16 training step measured 1.33x slower" in s["precision_description"]
